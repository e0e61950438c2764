"""The applied log: each shard's processed events (features, prediction), in apply order.

``commit_batch`` appends to it in the same atomic script that writes the deltas, so an event
is in the log if and only if it was applied. It is the durable event log's tail: a log writer
reads it in order, appends to partitioned files, and trims what it has safely written. Its id
is the writer's cursor: a writer that crashed between writing and trimming re-reads from the
last id its files hold, so nothing is lost or written twice.

An entry whose ``lines`` are bytes (JSON lines the trainer already encoded,
``data.eventlog.render_applied``) is stored as its other fields' JSON, a newline, then the
lines as they are: escaping them into one JSON string and unescaping them again cost the
trainer and the writer CPU for every event. JSON as orjson writes it holds no raw newline, so
the first newline ends the header; any other entry is one JSON object, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from fedlearn.store import keys
from fedlearn.store.entries import FIELD, Batch, Entry, decode_id, encode, parse_entries
from fedlearn.store.streamid import StreamId

MAX_COUNT = 100_000


class AppliedLog:
    """Read and trim the per-shard applied logs."""

    def __init__(self, client: Any, n_shards: int) -> None:
        self._r = client
        self.n_shards = n_shards

    def read(self, shard: int, *, after: str | StreamId = "0-0", count: int = 1000) -> Batch:
        """Up to ``count`` entries with ids strictly after ``after``, oldest first."""
        keys.check_shard(shard, self.n_shards)
        if not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be an int in 1..{MAX_COUNT}, got {count!r}")
        start = "(" + str(StreamId.parse(after))  # exclusive range start: Redis >= 6.2
        return parse_applied(self._r.xrange(keys.applied(shard), start, "+", count=count))

    def holds(self, shard: int, entry_id: str | StreamId) -> bool:
        """Whether entry ``entry_id`` is still in the shard's applied log (not trimmed)."""
        keys.check_shard(shard, self.n_shards)
        at = str(StreamId.parse(entry_id))
        return bool(self._r.xrange(keys.applied(shard), at, at, count=1))

    def trim(self, shard: int, *, through: str | StreamId) -> int:
        """Drop every entry up to and including ``through``; returns how many went."""
        keys.check_shard(shard, self.n_shards)
        keep_from = StreamId.parse(through).next()
        return int(self._r.xtrim(keys.applied(shard), minid=str(keep_from), approximate=False))

    def length(self, shard: int) -> int:
        keys.check_shard(shard, self.n_shards)
        return int(self._r.xlen(keys.applied(shard)))


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """An applied-log entry's ``e`` field: a header and its ``lines`` kept as they are when
    they are bytes, else the entry's JSON."""
    lines = entry.get("lines")
    if not isinstance(lines, bytes):
        return encode(entry)
    return encode({k: v for k, v in entry.items() if k != "lines"}) + b"\n" + lines


def parse_applied(raw: Any) -> Batch:
    """A ``Batch`` of applied-log entries (XRANGE's reply), either encoding of
    :func:`encode_entry`; an entry that is neither is rejected as ``parse_entries`` says."""
    batch = Batch()
    for entry_id, fields in raw or ():
        payload = fields.get(FIELD) if isinstance(fields, Mapping) else None
        if payload and b"\n" in payload:
            head, lines = payload.split(b"\n", 1)
            try:
                record = orjson.loads(head)
            except orjson.JSONDecodeError:
                record = None
            if type(record) is dict:
                record["lines"] = lines
                batch.entries.append(Entry(decode_id(entry_id), record))
                continue
        batch.extend(parse_entries([(entry_id, fields)]))
    return batch
