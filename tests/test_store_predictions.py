"""Prediction records: bound to their user, shared features stored once, a per-user quota that
drops the oldest first (atomically), expiry, and forgetting by user; on a real redis-server."""

from __future__ import annotations

import time

import pytest

from fedlearn.store import Store
from fedlearn.store.predictions import PredictionQuota, PredictionTooLargeError, compact

QUOTA = PredictionQuota(max_records=3, max_bytes=1 << 20)


def same_shard(store: Store, user: str, count: int) -> list[str]:
    shard = store.shard_of(user)
    return [u for u in (f"x{i}" for i in range(500)) if store.shard_of(u) == shard][:count]


def ranking(user: str, items: list[str], context: dict[str, float]) -> dict:
    return {
        "user": user,
        "base_version": "v1",
        "items": {
            item: {"features": {f"user={user}": 1.0, f"item={item}": 1.0, **context}, "score": 0.5}
            for item in items
        },
    }


def test_a_record_reads_back_as_scored_but_stores_shared_features_once(store: Store):
    record = ranking("ann", ["a", "b", "c"], {"hour=21": 1.0, "age": 0.3})
    record["items"]["c"]["features"]["genre=x"] = 1.0
    stored = compact(record, ttl_s=60)
    assert stored["shared"] == {"user=ann": 1.0, "hour=21": 1.0, "age": 0.3}
    assert stored["items"]["c"]["features"] == {"item=c": 1.0, "genre=x": 1.0}
    shard = store.shard_of("ann")
    store.predictions.put_predictions(shard, {"p1": record}, 60, quota=QUOTA)
    found = store.predictions.get_predictions(shard, [("p1", "ann")])["p1"]
    assert found["items"] == record["items"]
    assert found["user"] == "ann" and found["base_version"] == "v1"
    assert 0 < store.client.pttl(f"fl:{{s{shard}}}:preds:ann") <= 60_000


def test_a_prediction_id_is_found_only_for_its_own_user(store: Store):
    (mallory,) = same_shard(store, "ann", 1)
    shard = store.shard_of("ann")
    store.predictions.put_predictions(shard, {"p1": ranking("ann", ["a"], {})}, 60, quota=QUOTA)
    assert store.predictions.get_predictions(shard, [("p1", mallory)]) == {}
    assert set(store.predictions.get_predictions(shard, [("p1", "ann")])) == {"p1"}
    # named by the owner and another user in one call: answered to neither (keyed by id alone)
    both = store.predictions.get_predictions(shard, [("p1", "ann"), ("p1", mallory)])
    assert both == {}


def test_the_quota_drops_the_oldest_records_first(store: Store):
    shard = store.shard_of("ann")
    for i in range(5):
        dropped = store.predictions.put_predictions(
            shard, {f"p{i}": ranking("ann", ["a"], {})}, 60, quota=QUOTA
        )
        assert dropped == (1 if i >= 3 else 0)
    wanted = [(f"p{i}", "ann") for i in range(5)]
    assert set(store.predictions.get_predictions(shard, wanted)) == {"p2", "p3", "p4"}
    size = len(store.client.hget(f"fl:{{s{shard}}}:preds:ann", "p4"))
    by_bytes = PredictionQuota(max_records=100, max_bytes=2 * size + size // 2)
    store.predictions.put_predictions(shard, {"p5": ranking("ann", ["a"], {})}, 60, quota=by_bytes)
    assert set(store.predictions.get_predictions(shard, [*wanted, ("p5", "ann")])) == {"p4", "p5"}


def test_a_record_larger_than_the_quota_is_refused_and_nothing_is_written(store: Store):
    shard = store.shard_of("ann")
    store.predictions.put_predictions(shard, {"p1": ranking("ann", ["a"], {})}, 60, quota=QUOTA)
    big = ranking("ann", [f"i{n}" for n in range(200)], {})
    tiny = PredictionQuota(max_records=10, max_bytes=1024)
    with pytest.raises(PredictionTooLargeError, match=r"bytes, more than the 1024 bytes"):
        store.predictions.put_predictions(shard, {"p2": big}, 60, quota=tiny)
    assert set(store.predictions.get_predictions(shard, [("p1", "ann"), ("p2", "ann")])) == {"p1"}


def test_records_past_their_ttl_are_neither_found_nor_kept(store: Store):
    shard = store.shard_of("ann")
    store.predictions.put_predictions(shard, {"old": ranking("ann", ["a"], {})}, 1, quota=QUOTA)
    time.sleep(1.1)
    store.predictions.put_predictions(shard, {"new": ranking("ann", ["a"], {})}, 60, quota=QUOTA)
    assert store.client.hkeys(f"fl:{{s{shard}}}:preds:ann") == [b"new"]
    assert set(store.predictions.get_predictions(shard, [("old", "ann"), ("new", "ann")])) == {
        "new"
    }


def test_forgetting_a_user_drops_only_their_prediction_records(store: Store) -> None:
    (other,) = same_shard(store, "ann", 1)
    shard = store.shard_of("ann")
    records = {"p1": ranking("ann", ["a"], {}), "p2": ranking("ann", [], {})}
    store.predictions.put_predictions(shard, records, 60, quota=QUOTA)
    store.predictions.put_predictions(shard, {"p3": ranking(other, ["a"], {})}, 60, quota=QUOTA)
    assert store.predictions.delete_user(shard, "ann") == 2
    wanted = [("p1", "ann"), ("p2", "ann"), ("p3", other)]
    assert set(store.predictions.get_predictions(shard, wanted)) == {"p3"}
    assert store.predictions.delete_user(shard, "ann") == 0


def test_arguments_are_checked_before_any_write(store: Store):
    shard = store.shard_of("ann")
    with pytest.raises(ValueError, match=r"ttl_s must be an int in 1\.\.2592000 seconds, got 0"):
        store.predictions.put_predictions(shard, {"p": ranking("ann", [], {})}, 0, quota=QUOTA)
    with pytest.raises(TypeError, match=r"records\['p'\] must be a mapping, got list"):
        store.predictions.put_predictions(shard, {"p": []}, 5, quota=QUOTA)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"records\['p'\]\['user'\] must be a string"):
        store.predictions.put_predictions(shard, {"p": {"items": {}}}, 5, quota=QUOTA)
    with pytest.raises(ValueError, match="max_records must be a positive int, got 0"):
        PredictionQuota(max_records=0, max_bytes=10)
