"""The trainer's copy of the catalog: fresh within its TTL, new items at once, bounded."""

from __future__ import annotations

import pytest

from fedlearn.store import Store
from fedlearn.trainer.catalog_cache import CatalogCache


class Clock:
    """A clock the test moves by hand (the cache's only notion of time)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def item(genre: str) -> dict:
    return {"features": {f"genre={genre}": 1.0}}


def test_a_changed_item_is_seen_once_the_ttl_has_passed(store: Store) -> None:
    clock = Clock()
    cache = CatalogCache(store.catalog, ttl_s=1.0, max_items=100, clock=clock)
    store.catalog.put_items({"a": item("x")})
    assert cache.features(["a"])["a"] == {"genre=x": 1.0}
    store.catalog.replace({"a": item("y")})
    clock.now = 0.9
    assert cache.features(["a"])["a"] == {"genre=x": 1.0}  # stale, within the TTL
    clock.now = 1.0
    assert cache.features(["a"])["a"] == {"genre=y": 1.0}


def test_an_item_not_held_is_fetched_at_once(store: Store) -> None:
    cache = CatalogCache(store.catalog, ttl_s=60.0, max_items=100, clock=Clock())
    assert "b" not in cache.features(["b"])  # absent items are not remembered as absent
    store.catalog.put_items({"b": item("x")})
    assert cache.features(["b"])["b"] == {"genre=x": 1.0}


def test_the_cache_is_bounded(store: Store) -> None:
    store.catalog.put_items({f"i{n}": item(str(n)) for n in range(10)})
    cache = CatalogCache(store.catalog, ttl_s=60.0, max_items=3, clock=Clock())
    for n in range(10):
        held = cache.features([f"i{n}"])
        assert held[f"i{n}"] == {f"genre={n}": 1.0}
        assert len(held) <= 4  # the bound plus the one batch that went past it


def test_bad_bounds_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="max_items >= 1"):
        CatalogCache(store.catalog, ttl_s=1.0, max_items=0)
