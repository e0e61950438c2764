"""The durable event log: each shard's applied events, drained from Redis into JSON Lines files.

The commit script appends every applied event (with its features and the prediction made
before learning) to the shard's applied-log stream. The shard's owner drains that stream into
``<dir>/shard=NNN/<YYYY-MM-DD>.jsonl`` (UTC day of application), fsyncs, and only then trims
what it wrote. Each line carries ``log_id``, the id of its batch in the applied stream (a batch's
lines are written together). After a crash between writing and trimming, the writer resumes
after the last ``log_id`` in its files, so a line is never lost and never written twice.
Monthly training and ``fedlearn replay`` read these files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from fedlearn.store import Store, StreamId

PARTITION = "shard={shard:03d}"


def _repair_and_read_last(path: Path) -> bytes | None:
    """The last complete line of ``path``, cutting off a torn last line left by a crash.

    The cut matters: the next append would otherwise glue a new line to the torn one.
    """
    with path.open("r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        chunk = 1 << 16
        while True:
            start = max(0, size - chunk)
            fh.seek(start)
            data = fh.read(size - start)
            cut = data.rfind(b"\n")
            if cut < 0 and start > 0:
                chunk *= 2
                continue
            if start + cut + 1 != size:
                fh.truncate(start + cut + 1)
            lines = data[: cut + 1].rstrip(b"\n").rsplit(b"\n", 1)
            if lines[-1].strip() and (start == 0 or len(lines) == 2):
                return lines[-1]
            if start == 0:
                return None
            chunk *= 2


class EventLogWriter:
    """Drains shards' applied logs into partitioned files under ``root``."""

    def __init__(self, store: Store, root: str | os.PathLike[str]) -> None:
        self.store = store
        self.root = Path(root)
        self._cursor: dict[int, StreamId] = {}

    def shard_dir(self, shard: int) -> Path:
        return self.root / PARTITION.format(shard=shard)

    def cursor(self, shard: int) -> StreamId:
        """The id of the last applied-log entry already in the files of ``shard``."""
        if shard not in self._cursor:
            found = StreamId(0, 0)
            folder = self.shard_dir(shard)
            files = sorted(folder.glob("*.jsonl")) if folder.exists() else []
            for path in reversed(files):
                line = _repair_and_read_last(path)
                if line is not None:
                    found = StreamId.parse(orjson.loads(line)["log_id"])
                    break
            self._cursor[shard] = found
        return self._cursor[shard]

    def drain(self, shard: int, *, count: int = 20) -> int:
        """Move up to ``count`` applied batches of ``shard`` into its files; returns the events.

        An applied-log entry holds one committed batch, in columns (see :func:`expand`)."""
        after = self.cursor(shard)
        batch = self.store.applied.read(shard, after=after, count=count)
        if not batch.entries and not batch.rejected:
            return 0
        by_day: dict[str, list[bytes]] = {}
        moved = 0
        for entry in batch.entries:
            day = time.strftime("%Y-%m-%d", time.gmtime(entry.event.get("applied_at", time.time())))
            lines = by_day.setdefault(day, [])
            for record in expand(entry.event):
                record["log_id"] = entry.id
                lines.append(orjson.dumps(record))
                moved += 1
        folder = self.shard_dir(shard)
        folder.mkdir(parents=True, exist_ok=True)
        for day, lines in sorted(by_day.items()):
            with (folder / f"{day}.jsonl").open("ab") as fh:
                fh.write(b"\n".join(lines) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        last = max(StreamId.parse(i) for i in batch.ids)
        self._cursor[shard] = last
        self.store.applied.trim(shard, through=last)
        return moved

    def forget(self, shard: int) -> None:
        """Drop the cached cursor (another process may write the shard's files meanwhile)."""
        self._cursor.pop(shard, None)


def expand(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One record per event of an applied batch: the event as sent, plus what the trainer saw
    (``features``, where they came from, the clone's and the base's prediction before
    learning, the base version, the stream id and when it was applied)."""
    columns = zip(
        batch["events"],
        batch["stream_id"],
        batch["features"],
        batch["features_from"],
        batch["prediction"],
        batch["base_prediction"],
        strict=True,
    )
    for event, stream_id, features, source, prediction, base_prediction in columns:
        yield {
            **event,
            "stream_id": stream_id,
            "features": features,
            "features_from": source,
            "prediction": prediction,
            "base_prediction": base_prediction,
            "base_version": batch["base_version"],
            "applied_at": batch["applied_at"],
        }


def read_log(root: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every record of an event log folder, shard by shard, each shard in apply order."""
    for folder in sorted(Path(root).glob("shard=*")):
        for path in sorted(folder.glob("*.jsonl")):
            with path.open("rb") as fh:
                for line in fh:
                    if line.strip():
                        yield orjson.loads(line)
