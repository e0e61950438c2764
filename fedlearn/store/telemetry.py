"""What the store can tell an operator, read in O(shards + trainers + rounds), never O(users).

- Trainers' snapshots: each trainer publishes a small JSON summary of its own metrics every few
  seconds (``fedlearn.trainer.publisher``) under a key with a TTL, so the API, which cannot
  scrape the trainers, can show them; a trainer that dies simply stops refreshing its key.
- Per-shard stream state: length, pending entries, unread entries and the age of the oldest
  unread one (the trainers' lag), the lease holder and the number of users with a delta.
- The tail of the base history and the latest aggregation rounds.

``StoreCollector`` exposes the shard state and the rounds to Prometheus at scrape time, so
``/metrics`` of the API (or of a Celery worker) shows them whichever process did the work.

Key map (trainer ``t1@host:42:ab``):

======================================  ==========================================================
``fl:{telemetry}:trainer:<owner>``      the trainer's latest snapshot (JSON, EX expiry)
``fl:{telemetry}:trainers``             sorted set owner -> time of its latest snapshot (ms)
======================================  ==========================================================

Both carry the tag ``{telemetry}`` so that one MGET reads every snapshot on a Redis Cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fedlearn.aggregate.round import TERMINAL
from fedlearn.store import keys
from fedlearn.store.bases import BaseInfo
from fedlearn.store.rounds import Rounds
from fedlearn.store.streamid import StreamId

TAG = "{telemetry}"
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


@dataclass(frozen=True, slots=True)
class RoundRow:
    """The figures of one aggregation round that operators watch."""

    id: str
    status: str
    trigger: str
    created_at: float
    finished_at: float | None
    duration_s: float | None
    users: int | None
    events: int | None
    clipped_fraction: float | None
    version: str | None
    parent: str | None
    strategy: str | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def trainer_key(owner: str) -> str:
    return f"{keys.PREFIX}:{TAG}:trainer:{owner}"


def trainers_key() -> str:
    return f"{keys.PREFIX}:{TAG}:trainers"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def round_row(record: Mapping[str, Any]) -> RoundRow:
    """The watched figures of a round record (``store.rounds``), whatever state it is in."""
    result = record.get("result") or {}
    started = _number(record.get("started_at")) or _number(record.get("created_at"))
    ended = _number(record.get("published_at")) or _number(record.get("finished_at"))
    users = result.get("users")
    clipped = result.get("clipped_users")
    fraction = None
    if isinstance(users, int) and users > 0 and isinstance(clipped, int):
        fraction = clipped / users
    strategy = result.get("strategy")
    return RoundRow(
        id=str(record["id"]),
        status=str(record.get("status", "")),
        trigger=str(record.get("trigger", "")),
        created_at=_number(record.get("created_at")) or 0.0,
        finished_at=_number(record.get("finished_at")) or ended,
        duration_s=(ended - started) if started is not None and ended is not None else None,
        users=users if isinstance(users, int) else None,
        events=result.get("events") if isinstance(result.get("events"), int) else None,
        clipped_fraction=fraction,
        version=result.get("version") or record.get("new_version"),
        parent=result.get("parent") or record.get("base"),
        strategy=strategy.get("name") if isinstance(strategy, dict) else None,
        error=record.get("error"),
    )


class Telemetry:
    """Publish and read trainers' snapshots; read shard, base and round state in bulk."""

    def __init__(self, client: Any, n_shards: int, *, group: str = "trainers") -> None:
        keys.check_n_shards(n_shards)
        self._r = client
        self.n_shards = n_shards
        self.group = group
        self.rounds = Rounds(client, n_shards)

    @classmethod
    def of(cls, store: Any) -> Telemetry:
        """The telemetry of a ``Store`` (``store.telemetry`` once the facade has it)."""
        found = getattr(store, "telemetry", None)
        if isinstance(found, Telemetry):
            return found
        return cls(store.client, store.n_shards, group=store.streams.group)

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
        pipe.set(trainer_key(owner), blob, ex=ttl_s)
        pipe.zadd(trainers_key(), {owner: now_ms})
        pipe.execute()

    def withdraw(self, owner: str) -> None:
        """Forget ``owner``'s snapshot at once (a trainer stopping cleanly)."""
        keys.check_id("owner", owner)
        pipe = self._r.pipeline(transaction=False)
        pipe.delete(trainer_key(owner))
        pipe.zrem(trainers_key(), owner)
        pipe.execute()

    def snapshots(self, *, max_age_s: float = DEFAULT_TTL_S) -> list[dict[str, Any]]:
        """The live trainers' latest snapshots, oldest trainer first; forgets the stale ones."""
        now_ms = int(time.time() * 1000)
        oldest = now_ms - int(max_age_s * 1000)
        self._r.zremrangebyscore(trainers_key(), "-inf", f"({oldest}")
        owners = [_text(o) for o in self._r.zrange(trainers_key(), 0, -1)]
        if not owners:
            return []
        blobs = self._r.mget([trainer_key(o) for o in owners])
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
            stats.append(
                ShardStats(
                    shard=shard,
                    length=length,
                    pending=pending,
                    lag_events=lag_events,
                    lag_seconds=lag_seconds,
                    users=users,
                    holder=_text(holder) if isinstance(holder, bytes | str) else None,
                )
            )
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

    def recent_rounds(self, limit: int = 20) -> list[RoundRow]:
        """The latest ``limit`` aggregation rounds, newest first."""
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValueError(f"limit must be an int in 1..1000, got {limit!r}")
        return [round_row(record) for record in self.rounds.recent(limit)]


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | bytes | str) else 0


class StoreCollector(Collector):
    """Prometheus metrics read from the store at scrape time: per-shard stream state and the
    latest aggregation rounds. Register it on the registry that serves ``/metrics``.

    ``shards``/``rounds`` pick what to read (a Celery worker needs only the rounds). A store
    that does not answer yields no samples rather than failing the whole scrape.
    """

    def __init__(
        self, telemetry: Telemetry, *, shards: bool = True, rounds: bool = True, recent: int = 50
    ) -> None:
        self.telemetry = telemetry
        self.shards = shards
        self.rounds = rounds
        self.recent = recent

    def describe(self) -> list[Any]:
        return []  # collected lazily: describing would read Redis at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            if self.shards:
                yield from _shard_families(self.telemetry.shard_stats())
            if self.rounds:
                yield from _round_families(
                    self.telemetry.recent_rounds(self.recent), *self.telemetry.base_tail(1)
                )
        except redis.RedisError:
            return


def _shard_families(stats: Sequence[ShardStats]) -> Iterator[GaugeMetricFamily]:
    specs = (
        ("fedlearn_stream_length", "Entries in the shard's stream (XLEN)", "length"),
        ("fedlearn_stream_pending", "Entries read by a trainer and not yet committed", "pending"),
        (
            "fedlearn_stream_lag_events",
            "Entries not yet read by the trainers (exact on Redis >= 7; on 6.2 it includes "
            "acknowledged entries awaiting trim)",
            "lag_events",
        ),
        (
            "fedlearn_stream_lag_seconds",
            "Age of the oldest entry not yet read by the trainers (0: none waits)",
            "lag_seconds",
        ),
        ("fedlearn_shard_users", "Users with a delta in the shard", "users"),
    )
    for name, help_text, field in specs:
        family = GaugeMetricFamily(name, help_text, labels=["shard"])
        for row in stats:
            family.add_metric([str(row.shard)], getattr(row, field))
        yield family
    owned = GaugeMetricFamily(
        "fedlearn_shard_owned", "1 when a trainer holds the shard's lease", labels=["shard"]
    )
    for row in stats:
        owned.add_metric([str(row.shard)], 1.0 if row.holder else 0.0)
    yield owned


def _round_families(
    rows: Sequence[RoundRow], current: str | None, tail: Sequence[BaseInfo]
) -> Iterator[GaugeMetricFamily]:
    by_status = GaugeMetricFamily(
        "fedlearn_rounds_recent",
        "Aggregation rounds among the latest ones recorded, by status",
        labels=["status"],
    )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    for status in sorted(TERMINAL | {"queued", "running", "publishing", "published"}):
        by_status.add_metric([status], counts.get(status, 0))
    yield by_status
    last_end = GaugeMetricFamily(
        "fedlearn_round_last_end_timestamp_seconds",
        "When the latest round with this outcome ended (unix time)",
        labels=["status"],
    )
    seen: set[str] = set()
    for row in rows:  # newest first
        if row.status in seen or row.finished_at is None:
            continue
        seen.add(row.status)
        last_end.add_metric([row.status], row.finished_at)
    yield last_end
    published = next((r for r in rows if r.status in ("published", "done")), None)
    figures = (
        ("fedlearn_round_duration_seconds", "Duration of the latest published round", "duration"),
        ("fedlearn_round_users", "Users who contributed to the latest published round", "users"),
        ("fedlearn_round_events", "Events behind the latest published round", "events"),
        (
            "fedlearn_round_clipped_fraction",
            "Share of the latest published round's users whose change was clipped",
            "clipped",
        ),
    )
    values = {}
    if published is not None:
        values = {
            "duration": published.duration_s,
            "users": published.users,
            "events": published.events,
            "clipped": published.clipped_fraction,
        }
    for name, help_text, field in figures:
        family = GaugeMetricFamily(name, help_text)
        if values.get(field) is not None:
            family.add_metric([], float(values[field]))
        yield family
    version = GaugeMetricFamily(
        "fedlearn_base_version_info",
        "The current base version (label) and when it was published (value, unix time)",
        labels=["version"],
    )
    if current is not None:
        created = next((b.created_at for b in tail if b.version == current), 0.0)
        version.add_metric([current], created)
    yield version
