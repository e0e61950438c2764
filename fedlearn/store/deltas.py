"""Per-user delta records: one Redis hash per user, written only by ``commit_batch``.

Fields: ``delta`` (the ``.fldl`` bytes), ``last_event`` (stream id of the last applied event),
``base`` (the base version the delta refers to), ``generation`` and ``events`` (count). Reads
of many users go in one script call (one round trip). A shard's users are listed in a
set, so aggregation can walk a shard with SSCAN on a single Redis and on a cluster alike,
where a key-pattern SCAN would have to visit every node.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedlearn.store import keys
from fedlearn.store.scripts import Scripts, run_many
from fedlearn.store.streamid import StreamId

_FIELDS = (b"delta", b"last_event", b"base", b"generation", b"events", b"gate")


@dataclass(frozen=True, slots=True)
class DeltaRecord:
    """What the store knows of one user's clone."""

    user: str
    delta: bytes
    last_event: StreamId
    base: str
    generation: int
    events: int
    gate: bytes = b""  # the serving gate's state (``fedlearn.model.gating.Gate``)


def _record(user: str, raw: Sequence[bytes | None]) -> DeltaRecord | None:
    delta, last_event, base, generation, events, gate = raw
    if delta is None or last_event is None:
        return None
    return DeltaRecord(
        user=user,
        delta=delta,
        last_event=StreamId.parse(last_event),
        base=(base or b"").decode("utf-8"),
        generation=int(generation or 0),
        events=int(events or 0),
        gate=gate or b"",
    )


def _records(users: Sequence[str], replies: Sequence[Any]) -> dict[str, DeltaRecord]:
    """The records of ``users`` in a ``GET_DELTAS`` reply (users without one are absent)."""
    found = {}
    for user, raw in zip(users, replies, strict=True):
        record = _record(user, raw)
        if record is not None:
            found[user] = record
    return found


class Deltas:
    """Read and delete per-user delta records (writes go through ``commit_batch``)."""

    def __init__(self, client: Any, n_shards: int, scripts: Scripts | None = None) -> None:
        self._r = client
        self.n_shards = n_shards
        self._scripts = scripts or Scripts.register(client)

    def _check(self, shard: int, users: Sequence[str]) -> None:
        keys.check_shard(shard, self.n_shards)
        user = keys.foreign_user(shard, users, self.n_shards)
        if user is not None:
            raise ValueError(
                f"user {user!r} belongs to shard {keys.shard_of(user, self.n_shards)}, not {shard}"
            )

    def get(self, shard: int, user: str) -> DeltaRecord | None:
        """One user's record, by a plain HMGET: the API's read path keeps working while Redis
        pauses writes (``CLIENT PAUSE WRITE`` in a failover holds scripts back on 6.2)."""
        self._check(shard, [user])
        return _record(user, self._r.hmget(keys.delta(shard, user), _FIELDS))

    def get_many(self, shard: int, users: Sequence[str]) -> dict[str, DeltaRecord]:
        """The records of ``users`` that have one (users without a delta are absent)."""
        return self.get_many_shards({shard: users})[shard]

    def get_many_shards(
        self, wanted: Mapping[int, Sequence[str]]
    ) -> dict[int, dict[str, DeltaRecord]]:
        """:meth:`get_many` of several shards (shard -> users) in one round trip: a trainer's
        pass over the shards it owns."""
        calls, asked = [], []
        for shard, users in wanted.items():
            users = list(dict.fromkeys(users))
            self._check(shard, users)
            if users:
                prefix = keys.delta_prefix(shard)
                calls.append((self._scripts.get_deltas, [prefix + u for u in users], _FIELDS))
                asked.append((shard, users))
        found: dict[int, dict[str, DeltaRecord]] = {shard: {} for shard in wanted}
        for (shard, users), replies in zip(asked, run_many(self._r, calls), strict=True):
            if isinstance(replies, Exception):
                raise replies
            found[shard] = _records(users, replies)
        return found

    def users(self, shard: int, *, batch: int = 500) -> Iterator[str]:
        """Every user of ``shard`` with a delta (SSCAN: may repeat a user, never misses one
        that exists for the whole walk)."""
        keys.check_shard(shard, self.n_shards)
        for raw in self._r.sscan_iter(keys.users(shard), count=batch):
            yield raw.decode("utf-8")

    def iter_shard(self, shard: int, *, batch: int = 500) -> Iterator[DeltaRecord]:
        """Every delta record of ``shard``, ``batch`` users per round-trip (for aggregation)."""
        chunk: list[str] = []
        seen: set[str] = set()
        for user in self.users(shard, batch=batch):
            if user in seen:
                continue
            seen.add(user)
            chunk.append(user)
            if len(chunk) >= batch:
                yield from self.get_many(shard, chunk).values()
                chunk = []
        if chunk:
            yield from self.get_many(shard, chunk).values()

    def count(self, shard: int) -> int:
        keys.check_shard(shard, self.n_shards)
        return int(self._r.scard(keys.users(shard)))

    def delete_user(self, shard: int, user: str) -> bool:
        """Forget a user's clone (GDPR erasure, or a reset); True when there was one.

        Safe against a running trainer only if it does not hold the user's delta in memory:
        the trainer would write it back with its next commit. Erase through the trainer
        (or with its lease) when that matters.
        """
        self._check(shard, [user])
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(keys.delta(shard, user))
        pipe.srem(keys.users(shard), user)
        deleted, _ = pipe.execute()
        return bool(deleted)
