"""The Redis state of aggregation rounds: the lock, round records, users' snapshots, the
round-scoped snapshot candidates and partial results of the map step, FedAvgM's momentum per
base version, and the archive of a generation's deltas.

``fl:{rounds}:lock``               the running round's id (PX expiry): one round at a time
``fl:{rounds}:round:r1``           hash: ``status`` and JSON fields (config, result, ...)
``fl:{rounds}:index``              sorted set of round ids by creation time
``fl:{rounds}:open``               set of rounds not finished (queued .. published)
``fl:{rounds}:momentum:<version>`` FedAvgM's momentum buffer after publishing ``version``
``fl:{s3}:snap``                   hash user -> snapshot (``aggregate.snapshots.Snapshot``)
``fl:{s3}:cand:r1:a``              hash user -> snapshot candidate written by one map attempt
``fl:{s3}:rcand:r1``               hash user -> the winning candidate rebased (what is promoted)
``fl:{rounds}:shares:<version>``   how the round publishing ``version`` maps a change to a share
``fl:{s3}:part:r1``                hash: the winning attempt, its meta, bucket blobs, norms
``fl:{s3}:archive:<generation>``   hash user -> the user's last delta of that generation
=================================  ===========================================================
=======
Its keys are spelled in ``store/keys.py`` (the lock, records, index, open set and momentum in
the rounds' own slot; snapshots, candidates, partials and archives in each shard's), its Lua
scripts in ``store/scripts.py``.

Per-shard keys carry the shard's tag and global ones ``{rounds}``, and every Lua script here
touches keys of one slot only, so all of it runs on a Redis Cluster.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from fedlearn.store import keys
from fedlearn.store.connection import text as _text
from fedlearn.store.scripts import (
    RELEASE_LEASE,
    RENEW_LEASE,
    ROUND_COMMIT_PARTIAL,
    ROUND_CREATE,
    ROUND_PROMOTE_SNAPSHOTS,
    ROUND_TRANSITION,
)

CANDIDATE_TTL_S = 7 * 24 * 3600  # a crashed attempt's leftovers disappear by themselves
MOMENTUM_TTL_S = 90 * 24 * 3600


_ROUND_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_round_id(round_id: str) -> None:
    if not isinstance(round_id, str) or not _ROUND_ID.fullmatch(round_id):
        raise ValueError(f"round id must be 1..64 letters, digits or '._-', got {round_id!r}")


class Rounds:
    """Lock, records and per-shard state of aggregation rounds (see the key map above)."""

    def __init__(self, client: Any, n_shards: int) -> None:
        keys.check_n_shards(n_shards)
        self._r = client
        self.n_shards = n_shards
        # The round lock is a lease on a key: the leases' compare-and-set scripts serve it.
        self._renew = client.register_script(RENEW_LEASE)
        self._release = client.register_script(RELEASE_LEASE)
        self._create = client.register_script(ROUND_CREATE)
        self._transition = client.register_script(ROUND_TRANSITION)
        self._commit_partial = client.register_script(ROUND_COMMIT_PARTIAL)
        self._promote = client.register_script(ROUND_PROMOTE_SNAPSHOTS)

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def lock_key() -> str:
        return keys.round_lock()

    @staticmethod
    def record_key(round_id: str) -> str:
        return keys.round_record(round_id)

    @staticmethod
    def index_key() -> str:
        return keys.round_index()

    @staticmethod
    def open_key() -> str:
        return keys.rounds_open()

    @staticmethod
    def momentum_key(version: str) -> str:
        return keys.round_momentum(version)

    def snapshots_key(self, shard: int) -> str:
        keys.check_shard(shard, self.n_shards)
        return keys.snapshots(shard)

    def candidates_key(self, shard: int, round_id: str, attempt: str) -> str:
        keys.check_shard(shard, self.n_shards)
        return keys.candidates(shard, round_id, attempt)

    def rebased_key(self, shard: int, round_id: str) -> str:
        keys.check_shard(shard, self.n_shards)
        return keys.rebased_candidates(shard, round_id)

    @staticmethod
    def shares_key(version: str) -> str:
        return keys.round_shares(version)

    def partial_key(self, shard: int, round_id: str) -> str:
        keys.check_shard(shard, self.n_shards)
        return keys.partial(shard, round_id)

    def archive_key(self, shard: int, generation: int) -> str:
        keys.check_shard(shard, self.n_shards)
        return keys.archive(shard, generation)

    # -- the lock -------------------------------------------------------------------------------

    def acquire_lock(self, round_id: str, ttl_ms: int) -> bool:
        """Take the lock for ``round_id`` unless another round holds it (or it holds it)."""
        check_round_id(round_id)
        if self._r.set(self.lock_key(), round_id, nx=True, px=ttl_ms):
            return True
        return self.renew_lock(round_id, ttl_ms)

    def renew_lock(self, round_id: str, ttl_ms: int) -> bool:
        return bool(self._renew(keys=[self.lock_key()], args=[round_id, ttl_ms]))

    def release_lock(self, round_id: str) -> bool:
        return bool(self._release(keys=[self.lock_key()], args=[round_id]))

    def lock_holder(self) -> str | None:
        raw = self._r.get(self.lock_key())
        return None if raw is None else _text(raw)

    # -- round records --------------------------------------------------------------------------

    def create(self, round_id: str, **fields: Any) -> bool:
        """Record a new round as ``queued``; False if the id is taken."""
        check_round_id(round_id)
        now = time.time()
        pairs = _pairs({"created_at": now, "updated_at": now, **fields})
        return bool(
            self._create(
                keys=[self.record_key(round_id), self.index_key(), self.open_key()],
                args=[round_id, now, *pairs],
            )
        )

    def get(self, round_id: str) -> dict[str, Any] | None:
        """The round's record (``status`` and its fields), ``None`` if unknown."""
        check_round_id(round_id)
        raw = self._r.hgetall(self.record_key(round_id))
        if not raw:
            return None
        record: dict[str, Any] = {"id": round_id}
        for key, value in raw.items():
            name = _text(key)
            record[name] = _text(value) if name == "status" else orjson.loads(value)
        return record

    def transition(
        self, round_id: str, to: str, *, allowed: Iterable[str], terminal: bool, **fields: Any
    ) -> tuple[bool, str | None]:
        """Set status ``to`` (and ``fields``) if the status is one of ``allowed``, atomically;
        a ``terminal`` status also closes the round. Which moves are legal is the caller's
        (``aggregate.round.move``). Returns (moved, the status before; ``None``: no round)."""
        check_round_id(round_id)
        pairs = _pairs({"updated_at": time.time(), **fields})
        reply = self._transition(
            keys=[self.record_key(round_id), self.open_key()],
            args=[round_id, ",".join(allowed), to, "1" if terminal else "0", *pairs],
        )
        status = _text(reply[0])
        if status == "MISSING":
            return False, None
        return status == "OK", _text(reply[1])

    def clock(self) -> float:
        """Redis' time in seconds: heartbeats and their age are read on one clock, whatever
        the skew between the machines of the workers."""
        seconds, micros = self._r.time()
        return float(seconds) + micros / 1e6

    def heartbeat(self, round_id: str, lock_ttl_ms: int) -> bool:
        """Mark ``round_id`` alive now and renew its lock; False if it no longer holds it."""
        self.update(round_id, heartbeat_at=self.clock())
        return self.renew_lock(round_id, lock_ttl_ms)

    def update(self, round_id: str, **fields: Any) -> None:
        """Set ``fields`` without touching the status (progress, per-shard notes)."""
        check_round_id(round_id)
        self._r.hset(self.record_key(round_id), mapping=_encode(fields))

    def open_rounds(self) -> list[str]:
        return sorted(_text(r) for r in self._r.smembers(self.open_key()))

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        ids = [_text(r) for r in self._r.zrevrange(self.index_key(), 0, limit - 1)]
        return [record for record in map(self.get, ids) if record is not None]

    # -- snapshots and candidates ------------------------------------------------------------

    def snapshots(self, shard: int, users: Sequence[str]) -> dict[str, bytes]:
        """The stored snapshots of ``users`` (users without one are absent)."""
        if not users:
            return {}
        values = self._r.hmget(self.snapshots_key(shard), list(users))
        return {u: v for u, v in zip(users, values, strict=True) if v is not None}

    def snapshot_count(self, shard: int) -> int:
        return int(self._r.hlen(self.snapshots_key(shard)))

    def write_candidates(
        self, shard: int, round_id: str, attempt: str, candidates: Mapping[str, bytes]
    ) -> None:
        if not candidates:
            return
        key = self.candidates_key(shard, round_id, attempt)
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(key, mapping=dict(candidates))
        pipe.expire(key, CANDIDATE_TTL_S)
        pipe.execute()

    def commit_partial(
        self, shard: int, round_id: str, attempt: str, fields: Mapping[str, bytes]
    ) -> str:
        """Store a map attempt's partial result unless another attempt did first; returns the
        winning attempt. The winner's candidates stop expiring (they wait for promotion)."""
        pairs: list[Any] = []
        for name, value in fields.items():
            pairs += [name, value]
        winner = self._commit_partial(
            keys=[
                self.partial_key(shard, round_id),
                self.candidates_key(shard, round_id, attempt),
            ],
            args=[attempt, *pairs],
        )
        return _text(winner)

    def partial_field(self, shard: int, round_id: str, field: str) -> bytes | None:
        return self._r.hget(self.partial_key(shard, round_id), field)

    def partial_meta(self, shard: int, round_id: str) -> dict[str, Any] | None:
        raw = self.partial_field(shard, round_id, "meta")
        return None if raw is None else orjson.loads(raw)

    def drop_candidates(self, shard: int, round_id: str, attempt: str) -> None:
        self._r.delete(self.candidates_key(shard, round_id, attempt))

    def candidates(
        self, shard: int, round_id: str, *, count: int = 500
    ) -> Iterator[dict[str, bytes]]:
        """The winning attempt's candidates of ``round_id``, ``count`` users at a time."""
        attempt = self.partial_field(shard, round_id, "attempt")
        if attempt is None:
            return
        key = self.candidates_key(shard, round_id, _text(attempt))
        chunk: dict[str, bytes] = {}
        for user, value in self._r.hscan_iter(key, count=count):
            chunk[_text(user)] = value
            if len(chunk) >= count:
                yield chunk
                chunk = {}
        if chunk:
            yield chunk

    def write_rebased(self, shard: int, round_id: str, values: Mapping[str, bytes]) -> None:
        """Keep the rebased candidates that ``promote(rebased=True)`` makes the snapshots."""
        if values:
            key = self.rebased_key(shard, round_id)
            pipe = self._r.pipeline(transaction=False)
            pipe.hset(key, mapping=dict(values))
            pipe.expire(key, CANDIDATE_TTL_S)
            pipe.execute()

    def put_shares(self, version: str, blob: bytes) -> None:
        self._put_of_version(self.shares_key, version, blob, CANDIDATE_TTL_S)

    def get_shares(self, version: str) -> bytes | None:
        return self._get_of_version(self.shares_key, version)

    def promote(self, shard: int, round_id: str, *, count: int = 200, rebased: bool = False) -> int:
        """Make the winning candidates of ``round_id`` (``rebased``: their rebased copies)
        the users' snapshots (only forward), then drop them. Idempotent: a second call finds
        nothing left to do."""
        attempt = self.partial_field(shard, round_id, "attempt")
        if attempt is None:
            return 0
        raw = self.candidates_key(shard, round_id, _text(attempt))
        cand = self.rebased_key(shard, round_id) if rebased else raw
        snap = self.snapshots_key(shard)
        cursor, moved = b"0", 0
        while True:
            cursor, n = self._promote(keys=[cand, snap], args=[cursor, count])
            moved += int(n)
            if _text(cursor) == "0":
                break
        self._r.delete(cand, raw)
        return moved

    def discard(self, shard: int, round_id: str) -> None:
        """Forget what the map step of ``round_id`` left in ``shard`` (snapshots unchanged)."""
        attempt = self.partial_field(shard, round_id, "attempt")
        if attempt is not None:
            self.drop_candidates(shard, round_id, _text(attempt))
        self._r.delete(self.partial_key(shard, round_id), self.rebased_key(shard, round_id))

    def drop_partial(self, shard: int, round_id: str) -> None:
        """Drop the partial result, after its candidates were promoted."""
        self._r.delete(self.partial_key(shard, round_id))

    def forget_user(self, shard: int, user: str, generations: Iterable[int] = ()) -> int:
        """Erase what rounds keep of ``user`` (its snapshot, and its archived deltas of
        ``generations``): a user's erasure must reach these copies of its delta too.
        Returns how many copies went."""
        keys.check_id("user", user)
        pipe = self._r.pipeline(transaction=False)
        pipe.hdel(self.snapshots_key(shard), user)
        for generation in generations:
            pipe.hdel(self.archive_key(shard, generation), user)
        return sum(int(n) for n in pipe.execute())

    def clear_snapshots(self, shard: int) -> None:
        self._r.unlink(self.snapshots_key(shard))

    # -- momentum and archive ----------------------------------------------------------------

    def put_momentum(self, version: str, blob: bytes) -> None:
        self._put_of_version(self.momentum_key, version, blob, MOMENTUM_TTL_S)

    def get_momentum(self, version: str) -> bytes | None:
        return self._get_of_version(self.momentum_key, version)

    def _put_of_version(
        self, key: Callable[[str], str], version: str, blob: bytes, ttl_s: int
    ) -> None:
        """A blob a round keeps for a published ``version`` (momentum, share table)."""
        keys.check_version(version)
        self._r.set(key(version), blob, ex=ttl_s)

    def _get_of_version(self, key: Callable[[str], str], version: str) -> bytes | None:
        keys.check_version(version)
        return self._r.get(key(version))

    def archive(self, shard: int, generation: int, records: Mapping[str, bytes]) -> int:
        """Keep ``records`` (user -> snapshot-encoded delta) under ``generation``'s archive."""
        if not records:
            return 0
        self._r.hset(self.archive_key(shard, generation), mapping=dict(records))
        return len(records)

    def archived(self, shard: int, generation: int) -> dict[str, bytes]:
        raw = self._r.hgetall(self.archive_key(shard, generation))
        return {_text(k): v for k, v in raw.items()}


def _encode(fields: Mapping[str, Any]) -> dict[str, bytes]:
    """Record fields as JSON; the status is not one of them (``transition`` moves it)."""
    if "status" in fields:
        raise ValueError("status changes only through transition()")
    return {
        name: orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
        for name, value in fields.items()
    }


def _pairs(fields: Mapping[str, Any]) -> list[Any]:
    return [part for item in _encode(fields).items() for part in item]
