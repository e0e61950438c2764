"""The trainer's short-lived copy of the item catalog's features.

Fetching a batch's items with one HMGET and decoding each item's JSON cost ~1 us of trainer CPU
per event; the same few thousand items come back batch after batch. This keeps what was fetched
for up to ``ttl_s`` seconds and at most about ``max_items`` items, then starts afresh.

How stale it may be: an item found in the cache is served as it was when fetched, for at most
``ttl_s`` (by default the trainer's ``base_refresh_s``, 1 s: the base it trains against may be
as old). An item the cache does not hold is always fetched, so a newly added item is seen at its
first event. So only a change to an existing item's features (``Catalog.put_items`` or
``Catalog.replace``) reaches the trainer up to ``ttl_s`` late: events applied in that window
use the features the item had just before, as they would had they been applied a moment
earlier, which a trainer behind its stream by a second already does. Nothing is cached for
items that are not in the catalog (their events are rare and must see the item once added).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from fedlearn.store.items import Catalog


class CatalogCache:
    """Item id -> features, read through to a :class:`Catalog`, dropped whole when stale."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        ttl_s: float,
        max_items: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0 or max_items < 1:
            raise ValueError(f"need ttl_s >= 0 and max_items >= 1, got {ttl_s}, {max_items}")
        self._catalog = catalog
        self._ttl_s = ttl_s
        self._max_items = max_items
        self._clock = clock
        self._features: dict[str, dict[str, float]] = {}
        self._fetched_at = clock()

    def features(self, items: Collection[str]) -> dict[str, dict[str, float]]:
        """Features of every one of ``items`` that is in the catalog (the returned mapping may
        hold other items too; read it, do not change it)."""
        now = self._clock()
        # Dropped whole rather than item by item: one clock read a batch, not one per item.
        if now - self._fetched_at >= self._ttl_s or len(self._features) > self._max_items:
            self._features = {}
            self._fetched_at = now
        missing = [item for item in items if item not in self._features]
        if missing:
            self._features.update(self._catalog.features(missing))
        return self._features
