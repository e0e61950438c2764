"""Leases: one owner per shard; only the owner renews or releases."""

from __future__ import annotations

import pytest

from fedlearn.store import Store, new_owner_token


def test_one_owner_at_a_time(store: Store):
    assert store.leases.holder(1) is None and store.leases.ttl_ms(1) is None
    assert store.leases.acquire(1, "a", 30_000)
    assert store.leases.acquire(1, "a", 30_000)  # re-acquiring one's own lease extends it
    assert not store.leases.acquire(1, "b", 30_000)
    assert store.leases.holder(1) == "a"
    assert 0 < store.leases.ttl_ms(1) <= 30_000
    assert store.leases.acquire(2, "b", 30_000)  # other shards are independent


def test_only_the_owner_renews_and_releases(store: Store):
    assert store.leases.acquire(0, "a", 1_000)
    assert not store.leases.renew(0, "b", 60_000)
    assert store.leases.ttl_ms(0) <= 1_000
    assert store.leases.renew(0, "a", 60_000)
    assert store.leases.ttl_ms(0) > 1_000
    assert not store.leases.release(0, "b")
    assert store.leases.holder(0) == "a"
    assert store.leases.release(0, "a")
    assert store.leases.holder(0) is None
    assert not store.leases.renew(0, "a", 60_000)  # gone: renewing does not resurrect it
    assert store.leases.acquire(0, "b", 1_000)


def test_tokens_are_unique_and_readable():
    first, second = new_owner_token("worker-1"), new_owner_token("worker-1")
    assert first != second
    assert first.startswith("worker-1@")
    assert len(new_owner_token("x" * 128)) <= 128


@pytest.mark.parametrize("ttl", [0, -5, 10**9, 1.5])
def test_bad_ttls_are_refused(store: Store, ttl):
    with pytest.raises(ValueError, match=f"ttl_ms must be an int in 1..600000, got {ttl}"):
        store.leases.acquire(0, "a", ttl)
    assert store.leases.holder(0) is None


def test_holders_of_many_shards_in_one_look(store: Store):
    assert store.leases.acquire(1, "a", 5000) and store.leases.acquire(3, "b", 5000)
    assert store.leases.holders([0, 1, 2, 3]) == [None, "a", None, "b"]
    assert store.leases.holders([]) == []
    with pytest.raises(ValueError, match=r"0\.\.3"):
        store.leases.holders([1, 4])
