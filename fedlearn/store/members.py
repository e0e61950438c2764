"""Live trainers: a heartbeat per process, so shard ownership can be shared out fairly.

Each trainer refreshes its score (last heartbeat, ms) in one sorted set; the live ones are those
seen within the lease TTL. A trainer owns at most ``ceil(shards / live trainers)`` shards, so a
new trainer finds shards released for it and a dead one's shards are taken over when its leases
expire. One global key: fine on a cluster (single-key commands only).
"""

from __future__ import annotations

import time
from typing import Any

from fedlearn.store import keys
from fedlearn.store.connection import text


class Members:
    """Heartbeats of the live trainers."""

    def __init__(self, client: Any) -> None:
        self._r = client

    def heartbeat(self, owner: str, *, now_ms: int | None = None) -> None:
        keys.check_id("owner", owner)
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self._r.zadd(keys.trainer_members(), {owner: now_ms})

    def leave(self, owner: str) -> None:
        self._r.zrem(keys.trainer_members(), owner)

    def alive(self, ttl_ms: int, *, now_ms: int | None = None) -> list[str]:
        """Trainers heard from within ``ttl_ms``, oldest member first; forgets the others."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self._r.zremrangebyscore(keys.trainer_members(), "-inf", now_ms - ttl_ms)
        return [text(m) for m in self._r.zrange(keys.trainer_members(), 0, -1)]
