"""The GCRA rate limit on a real redis-server: a burst passes at once, the next unit waits one
interval, a refused request counts nothing, limits are per user and kind, 0 turns one off, and
the state expires once the bucket is full again."""

from __future__ import annotations

import pytest

from fedlearn.store import Store
from fedlearn.store.ratelimit import Rate, RateLimiter
from fedlearn.store.revocations import Revocations


@pytest.fixture
def limiter(store: Store) -> RateLimiter:
    return RateLimiter(store.client, store.n_shards)


def test_a_burst_passes_then_the_next_unit_waits_one_interval(limiter: RateLimiter):
    rate = Rate(per_s=0.5, burst=4)  # one unit every 2 s
    assert limiter.take("events", "ann", rate, 3).allowed
    assert limiter.take("events", "ann", rate, 1).allowed
    refused = limiter.take("events", "ann", rate, 2)
    assert not refused.allowed
    assert 3.5 < refused.retry_after_s <= 4.0  # two units: two intervals
    one = limiter.take("events", "ann", rate, 1)  # the refusal counted nothing
    assert not one.allowed and 1.5 < one.retry_after_s <= 2.0


def test_limits_are_per_user_and_kind_and_zero_is_off(limiter: RateLimiter, store: Store):
    rate = Rate(per_s=0.01, burst=1)
    assert limiter.take("rank", "ann", rate).allowed
    assert not limiter.take("rank", "ann", rate).allowed
    assert limiter.take("rank", "bob", rate).allowed
    assert limiter.take("events", "ann", rate).allowed
    off = Rate(per_s=0, burst=1)
    assert all(limiter.take("rank", "ann", off).allowed for _ in range(5))
    key = f"fl:{{s{store.shard_of('ann')}}}:rate:rank:ann"
    assert 0 < store.client.pttl(key) <= 100_000 + 1  # gone once the bucket is full again


def test_arguments_are_checked(limiter: RateLimiter):
    with pytest.raises(ValueError, match=r"units must be an int in 1\.\.2 \(the burst\), got 3"):
        limiter.take("events", "ann", Rate(1.0, 2), 3)
    with pytest.raises(ValueError, match="rate limit kind must be one of"):
        limiter.take("logins", "ann", Rate(1.0, 2))
    with pytest.raises(ValueError, match="per_s must be a finite number >= 0, got nan"):
        Rate(float("nan"), 1)


def test_a_token_issued_before_its_users_revocation_counts_nothing(limiter, store: Store):
    rate = Rate(per_s=0.01, burst=1)
    assert limiter.take("rank", "ann", rate, issued_at=100.0).allowed  # nothing revoked yet
    store.client.delete(f"fl:{{s{store.shard_of('ann')}}}:rate:rank:ann")
    at = Revocations(store.client, store.n_shards).revoke("ann", keep_s=60, at=200.25)
    for issued in (100.0, at):  # before it, and the very instant of it
        verdict = limiter.take("rank", "ann", rate, issued_at=issued)
        assert not verdict.allowed and verdict.revoked_at == at and verdict.retry_after_s == 0
    assert not store.client.exists(f"fl:{{s{store.shard_of('ann')}}}:rate:rank:ann")
    assert limiter.take("rank", "ann", rate, issued_at=at + 1e-6).allowed  # a newer token
    refused = limiter.take("rank", "ann", rate, issued_at=at + 1e-6)
    assert not refused.allowed and refused.revoked_at is None and refused.retry_after_s > 90
    assert limiter.take("rank", "bob", rate, issued_at=100.0).allowed  # bob was not revoked
