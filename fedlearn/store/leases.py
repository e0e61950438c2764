"""Shard leases: exactly one trainer owns a shard at a time, so a user's events apply in order.

A lease is a key holding the owner's token with a PX expiry. Acquire, renew and release are
compare-and-set scripts on the token, so a trainer can only extend or drop its own lease. A
lease alone cannot stop a paused trainer (GC, swap, a network hiccup) from writing after it
expired; that is what the fencing check in ``commit_batch`` is for: it re-checks the token in
the same atomic script that writes.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

from fedlearn.store import keys
from fedlearn.store.scripts import Scripts

MAX_TTL_MS = 10 * 60 * 1000


def new_owner_token(name: str = "trainer") -> str:
    """A token unique to this process and this acquisition: ``name@host:pid:random``.

    Readable in logs (which machine holds shard 3?) and never reused, so a restarted process
    cannot mistake a lease of its previous life for its own.
    """
    keys.check_id("name", name)
    token = f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    return token[-keys.MAX_ID_LEN :]


def _check_ttl(ttl_ms: int) -> None:
    if not isinstance(ttl_ms, int) or isinstance(ttl_ms, bool) or not 1 <= ttl_ms <= MAX_TTL_MS:
        raise ValueError(f"ttl_ms must be an int in 1..{MAX_TTL_MS}, got {ttl_ms!r}")


class Leases:
    """Acquire, renew, release and inspect the per-shard leases."""

    def __init__(self, client: Any, scripts: Scripts, n_shards: int) -> None:
        self._r = client
        self._scripts = scripts
        self.n_shards = n_shards

    def acquire(self, shard: int, owner: str, ttl_ms: int) -> bool:
        """Take the lease if it is free (or already ``owner``'s, then extend it)."""
        keys.check_shard(shard, self.n_shards)
        keys.check_id("owner", owner)
        _check_ttl(ttl_ms)
        return bool(self._scripts.acquire_lease(keys=[keys.lease(shard)], args=[owner, ttl_ms]))

    def renew(self, shard: int, owner: str, ttl_ms: int) -> bool:
        """Extend ``owner``'s lease to ``ttl_ms`` from now; False when it is not ``owner``'s
        anymore (the trainer must then stop working on the shard)."""
        keys.check_shard(shard, self.n_shards)
        keys.check_id("owner", owner)
        _check_ttl(ttl_ms)
        return bool(self._scripts.renew_lease(keys=[keys.lease(shard)], args=[owner, ttl_ms]))

    def release(self, shard: int, owner: str) -> bool:
        """Give the lease up (on a clean shutdown) so another trainer need not wait for expiry;
        False when it was not ``owner``'s."""
        keys.check_shard(shard, self.n_shards)
        keys.check_id("owner", owner)
        return bool(self._scripts.release_lease(keys=[keys.lease(shard)], args=[owner]))

    def holder(self, shard: int) -> str | None:
        """Who holds the shard now (``None``: nobody). For display: it may change any moment."""
        keys.check_shard(shard, self.n_shards)
        raw = self._r.get(keys.lease(shard))
        return None if raw is None else raw.decode("utf-8", "replace")

    def holders(self, shards: Sequence[int]) -> list[str | None]:
        """Who holds each of ``shards`` now, in one pipelined round trip (per node on a
        cluster): with hundreds of virtual shards, a trainer looks before it tries to acquire
        instead of running a script per shard held by others. For choosing only: it may
        change any moment, and ``acquire`` decides."""
        for shard in shards:
            keys.check_shard(shard, self.n_shards)
        pipe = self._r.pipeline(transaction=False)
        for shard in shards:
            pipe.get(keys.lease(shard))
        return [None if raw is None else raw.decode("utf-8", "replace") for raw in pipe.execute()]

    def ttl_ms(self, shard: int) -> int | None:
        """Milliseconds left on the lease, ``None`` when nobody holds it."""
        keys.check_shard(shard, self.n_shards)
        left = int(self._r.pttl(keys.lease(shard)))
        return left if left >= 0 else None
