"""The store's telemetry repository, read in O(shards + trainers + rounds), never O(users).

- Trainers' snapshots: each trainer publishes a small JSON summary of its own metrics every few
  seconds (``fedlearn.trainer.publisher``) under a key with a TTL (``keys.trainer_snapshot``),
  so the API, which cannot scrape the trainers, can show them; a trainer that dies simply stops
  refreshing its key.
- Per-shard stream state: length, pending entries, unread entries and the age of the oldest
  unread one (the trainers' lag), the lease holder and the number of users with a delta.
- The tail of the base history and the latest aggregation rounds (read through ``Rounds``).

What an operator is shown of these (the Prometheus collector, the dashboard's rows) lives in
``fedlearn.telemetry``: this module only reads and writes Redis.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from fedlearn.store import keys
from fedlearn.store.bases import BaseInfo
from fedlearn.store.connection import text as _text
from fedlearn.store.rounds import Rounds
from fedlearn.store.streamid import StreamId

DEFAULT_TTL_S = 15
MAX_SNAPSHOT_BYTES = 64 * 1024  # a snapshot is a summary: counts and quantiles, never users


@dataclass(frozen=True, slots=True)
class ShardStats:
    """One shard's stream as the trainers see it.

    ``lag_events``: entries not yet read by the trainers' group. Exact on Redis >= 7 (the
    group's ``lag``); on Redis 6.2 an upper bound, ``length - pending``, which also counts
    acknowledged entries that the owner has not trimmed yet (a few seconds' worth).
    ``lag_seconds``: age of the oldest unread entry (0 when nothing waits): exact everywhere.
    """

    shard: int
    length: int
    pending: int
    lag_events: int
    lag_seconds: float
    users: int
    holder: str | None


class Telemetry:
    """Publish and read trainers' snapshots; read shard, base and round state in bulk
    (``store.telemetry`` of a ``Store``)."""

    def __init__(
        self, client: Any, n_shards: int, rounds: Rounds, *, group: str = "trainers"
    ) -> None:
        keys.check_n_shards(n_shards)
        self._r = client
        self.n_shards = n_shards
        self.group = group
        self._rounds = rounds  # the store's own repository: one reader of round records

    # -- trainers' snapshots --------------------------------------------------------------

    def publish(
        self, owner: str, snapshot: Mapping[str, Any], *, ttl_s: int = DEFAULT_TTL_S
    ) -> None:
        """Store ``owner``'s snapshot for ``ttl_s`` seconds (a JSON object of counts)."""
        keys.check_id("owner", owner)
        if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 1 <= ttl_s <= 3600:
            raise ValueError(f"ttl_s must be an int in 1..3600 seconds, got {ttl_s!r}")
        blob = orjson.dumps(dict(snapshot), option=orjson.OPT_SERIALIZE_NUMPY)
        if len(blob) > MAX_SNAPSHOT_BYTES:
            raise ValueError(
                f"trainer {owner!r}: snapshot is {len(blob)} bytes, more than "
                f"{MAX_SNAPSHOT_BYTES}; a snapshot holds aggregate counts, never per-user lists"
            )
        now_ms = int(time.time() * 1000)
        pipe = self._r.pipeline(transaction=False)
        pipe.set(keys.trainer_snapshot(owner), blob, ex=ttl_s)
        pipe.zadd(keys.trainer_snapshots(), {owner: now_ms})
        pipe.execute()

    def withdraw(self, owner: str) -> None:
        """Forget ``owner``'s snapshot at once (a trainer stopping cleanly)."""
        keys.check_id("owner", owner)
        pipe = self._r.pipeline(transaction=False)
        pipe.delete(keys.trainer_snapshot(owner))
        pipe.zrem(keys.trainer_snapshots(), owner)
        pipe.execute()

    def snapshots(self, *, max_age_s: float = DEFAULT_TTL_S) -> list[dict[str, Any]]:
        """The live trainers' latest snapshots, oldest trainer first; forgets the stale ones."""
        now_ms = int(time.time() * 1000)
        oldest = now_ms - int(max_age_s * 1000)
        self._r.zremrangebyscore(keys.trainer_snapshots(), "-inf", f"({oldest}")
        owners = [_text(o) for o in self._r.zrange(keys.trainer_snapshots(), 0, -1)]
        if not owners:
            return []
        blobs = self._r.mget([keys.trainer_snapshot(o) for o in owners])
        return [orjson.loads(b) for b in blobs if b is not None]

    # -- shards ---------------------------------------------------------------------------

    def shard_stats(self, *, now_ms: int | None = None) -> list[ShardStats]:
        """Every shard's stream state, in two pipelined round-trips (per node on a cluster)."""
        shards = range(self.n_shards)
        pipe = self._r.pipeline(transaction=False)
        for shard in shards:
            stream = keys.stream(shard)
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
            pipe.get(keys.lease(shard))
            pipe.scard(keys.users(shard))
        first = pipe.execute(raise_on_error=False)
        rows = []
        for shard in shards:
            length, groups, holder, users = first[4 * shard : 4 * shard + 4]
            group = self._group(groups)
            rows.append((shard, _int(length), group, holder, _int(users)))
        pipe = self._r.pipeline(transaction=False)
        for shard, _, group, _, _ in rows:
            after = "-" if group is None else "(" + _text(group["last-delivered-id"])
            pipe.xrange(keys.stream(shard), min=after, max="+", count=1)
        oldest_unread = pipe.execute(raise_on_error=False)
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        stats = []
        for (shard, length, group, holder, users), unread in zip(rows, oldest_unread, strict=True):
            pending = int(group["pending"]) if group is not None else 0
            lag = group.get("lag") if group is not None else length
            lag_events = int(lag) if lag is not None else max(0, length - pending)
            lag_seconds = 0.0
            if isinstance(unread, list) and unread:
                accepted_ms = StreamId.parse(_text(unread[0][0])).ms
                lag_seconds = max(0.0, (now_ms - accepted_ms) / 1000.0)
            holder = _text(holder) if isinstance(holder, bytes | str) else None
            # The locals carry the fields' names, in the fields' order.
            stats.append(ShardStats(shard, length, pending, lag_events, lag_seconds, users, holder))
        return stats

    def _group(self, groups: Any) -> dict[str, Any] | None:
        """Our consumer group's XINFO GROUPS entry (``None``: no stream or no group yet)."""
        if not isinstance(groups, list):  # "no such key": the stream was never written
            return None
        for group in groups:
            if _text(group["name"]) == self.group:
                return group
        return None

    # -- bases and rounds -----------------------------------------------------------------

    def base_tail(self, limit: int = 50) -> tuple[str | None, list[BaseInfo]]:
        """The current version and the last ``limit`` published versions, oldest first.

        Reads only the tail of the history (``Bases.history`` reads all of it), so a service
        that has published thousands of versions answers as fast as a new one.
        """
        if not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ValueError(f"limit must be an int in 1..10000, got {limit!r}")
        pipe = self._r.pipeline(transaction=False)
        pipe.get(keys.base_current())
        pipe.lrange(keys.base_history(), -limit, -1)
        current, raw = pipe.execute()
        infos = []
        for blob in raw:
            entry = orjson.loads(blob)
            infos.append(BaseInfo(entry["version"], entry.get("meta") or {}, entry["created_at"]))
        return (_text(current) if current is not None else None), infos

    def recent_rounds(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ``limit`` aggregation round records, newest first."""
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValueError(f"limit must be an int in 1..1000, got {limit!r}")
        return self._rounds.recent(limit)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | bytes | str) else 0
