"""Which shards this trainer owns: leases, heartbeats and a fair share.

Each trainer heartbeats; with ``n`` live trainers it aims to own ``ceil(shards / n)`` shards.
It renews what it owns, releases what is beyond its share (a trainer joined), and acquires
free shards up to its share (a trainer left, or its leases expired), starting at an offset of
its own so that trainers do not all race for shard 0.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable

from fedlearn.store import Store

log = logging.getLogger(__name__)


class Ownership:
    """Keeps this trainer's set of shards; calls back when one is gained or lost."""

    def __init__(
        self,
        store: Store,
        owner: str,
        *,
        lease_ttl_ms: int,
        on_gain: Callable[[int], None],
        on_loss: Callable[[int], None],
    ) -> None:
        self.store = store
        self.owner = owner
        self.lease_ttl_ms = lease_ttl_ms
        self.members = store.members
        self.owned: set[int] = set()
        self._on_gain = on_gain
        self._on_loss = on_loss
        self._offset = zlib.crc32(owner.encode()) % store.n_shards

    def share(self) -> int:
        alive = self.members.alive(self.lease_ttl_ms)
        return math.ceil(self.store.n_shards / max(1, len(alive)))

    def maintain(self) -> None:
        """Heartbeat, renew, then release or acquire shards toward a fair share."""
        self.members.heartbeat(self.owner)
        for shard in sorted(self.owned):
            if not self.store.leases.renew(shard, self.owner, self.lease_ttl_ms):
                log.warning("lost the lease of shard %d", shard)
                self._lose(shard)
        target = self.share()
        for shard in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - target)]:
            self.release(shard)
        if len(self.owned) < target:
            self._acquire_free(target)

    def _acquire_free(self, target: int) -> None:
        """Acquire free shards, from this trainer's offset on, until it owns ``target``. One
        pipelined look at the leases first: with many shards, most are held by others, and a
        script per held shard at every heartbeat would cost more than the work."""
        n = self.store.n_shards
        candidates = [(self._offset + step) % n for step in range(n)]
        candidates = [shard for shard in candidates if shard not in self.owned]
        holders = self.store.leases.holders(candidates)
        for shard, holder in zip(candidates, holders, strict=True):
            if len(self.owned) >= target:
                break
            if holder is None and self.store.leases.acquire(shard, self.owner, self.lease_ttl_ms):
                log.info("acquired shard %d", shard)
                self.owned.add(shard)
                self._on_gain(shard)

    def still_owns(self, shard: int) -> bool:
        return shard in self.owned

    def lost(self, shard: int) -> None:
        """The store refused a commit for ``shard``: somebody else owns it now."""
        if shard in self.owned:
            self._lose(shard)

    def release(self, shard: int) -> None:
        self._lose(shard)
        self.store.leases.release(shard, self.owner)
        log.info("released shard %d", shard)

    def release_all(self) -> None:
        for shard in sorted(self.owned):
            self.release(shard)
        self.members.leave(self.owner)

    def _lose(self, shard: int) -> None:
        self.owned.discard(shard)
        self._on_loss(shard)
