"""Store operations the API needs that the ``Store`` facade does not offer (yet).

Each is one small function, so switching to a facade method is a one-line change here.
The catalog lives in ``fedlearn.store.catalog`` but is not on the facade (the trainer builds
``Catalog(store.client)`` the same way); forgetting a user's pending predictions has no store
method, so until it has they simply expire after ``prediction_ttl_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedlearn.store import Store

Features = dict[str, float]


def catalog_features(store: Store, items: Sequence[str]) -> dict[str, Features]:
    """Catalog features of ``items`` that the catalog has (items it lacks are absent)."""
    return store.catalog.features(items)


def catalog_page(store: Store, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` catalog items ``{"id", "title", "features"}`` (for the demo page)."""
    items, _ = store.catalog.page(limit)
    return items[:limit]


def forget_predictions(store: Store, user: str) -> int:
    """Drop ``user``'s pending prediction records; returns how many went.

    Needs ``store.predictions.delete_user(shard, user)`` (records are keyed by id only, so the
    store would keep a per-user index); until then they expire after their TTL.
    """
    return 0
