"""The durable event log's writer: each shard's applied events, drained from Redis into files.

The commit script appends every applied event (with its features and the prediction made
before learning) to the shard's applied-log stream. The shard's owner drains that stream into
the log's files (format and layout: ``fedlearn.data.eventlog``), fsyncs, and only then trims
what it wrote. Each line carries ``log_id``, the id of its batch in the applied stream (a
batch's lines are written together). After a crash between writing and trimming, the writer
resumes after the last ``log_id`` in its files, writing that batch again when it was not trimmed
(a crash in the middle of its write may have left part of it), so a line is never lost and never
written twice.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fedlearn.data import eventlog
from fedlearn.store import Store, StreamId


class EventLogWriter:
    """Drains shards' applied logs into partitioned files under ``root``."""

    def __init__(self, store: Store, root: str | os.PathLike[str]) -> None:
        self.store = store
        self.root = Path(root)
        self._cursor: dict[int, StreamId] = {}

    def shard_dir(self, shard: int) -> Path:
        return eventlog.shard_dir(self.root, shard)

    def cursor(self, shard: int) -> StreamId:
        """The id of the last applied-log entry wholly in the files of ``shard``.

        An entry still in the applied log was not trimmed, so it may not have been written
        whole: a crash in the middle of its write leaves a prefix of its lines, and resuming
        after its id would lose the rest. Its lines are cut and it is written again. (A
        trimmed entry was written and fsynced whole first.)"""
        if shard not in self._cursor:
            folder = self.shard_dir(shard)
            found = eventlog.last_log_id(folder)
            cursor = StreamId(0, 0) if found is None else StreamId.parse(found)
            if found is not None and self.store.applied.holds(shard, cursor):
                eventlog.cut_entry(folder, found)
                cursor = cursor.previous()
            self._cursor[shard] = cursor
        return self._cursor[shard]

    def drain(self, shard: int, *, count: int = 20) -> int:
        """Move up to ``count`` applied batches of ``shard`` into its files; returns the events.

        An applied-log entry holds one committed batch, its lines encoded by the trainer
        (:func:`fedlearn.data.eventlog.render_applied`)."""
        after = self.cursor(shard)
        batch = self.store.applied.read(shard, after=after, count=count)
        if not batch.entries and not batch.rejected:
            return 0
        by_day: dict[str, list[bytes]] = {}
        moved = 0
        for entry in batch.entries:
            day = eventlog.day_of(entry.event.get("applied_at", time.time()))
            lines, n = eventlog.stamp(entry.event, entry.id)
            if n:  # a batch of no events (an older trainer's columns) has no line
                by_day.setdefault(day, []).append(lines)
                moved += n
        eventlog.append_lines(self.shard_dir(shard), by_day)
        last = max(StreamId.parse(i) for i in batch.ids)
        self._cursor[shard] = last
        self.store.applied.trim(shard, through=last)
        return moved

    def forget(self, shard: int) -> None:
        """Drop the cached cursor (another process may write the shard's files meanwhile)."""
        self._cursor.pop(shard, None)
