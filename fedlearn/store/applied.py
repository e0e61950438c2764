"""The applied log: each shard's processed events (features, prediction), in apply order.

``commit_batch`` appends to it in the same atomic script that writes the deltas, so an event
is in the log if and only if it was applied. It is the durable event log's tail: a log writer
reads it in order, appends to partitioned files, and trims what it has safely written. Its id
is the writer's cursor: a writer that crashed between writing and trimming re-reads from the
last id its files hold, so nothing is lost or written twice.
"""

from __future__ import annotations

from typing import Any

from fedlearn.store import keys
from fedlearn.store.entries import Batch, parse_entries
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
        return parse_entries(self._r.xrange(keys.applied(shard), start, "+", count=count))

    def trim(self, shard: int, *, through: str | StreamId) -> int:
        """Drop every entry up to and including ``through``; returns how many went."""
        keys.check_shard(shard, self.n_shards)
        keep_from = StreamId.parse(through).next()
        return int(self._r.xtrim(keys.applied(shard), minid=str(keep_from), approximate=False))

    def length(self, shard: int) -> int:
        keys.check_shard(shard, self.n_shards)
        return int(self._r.xlen(keys.applied(shard)))
