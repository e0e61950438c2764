"""Prediction records: stored per id with a TTL, found again by id, forgotten by user."""

from __future__ import annotations

from fedlearn.store import Store


def test_forgetting_a_user_drops_only_their_prediction_records(store: Store) -> None:
    shard = store.shard_of("ann")
    others = [u for u in (f"x{i}" for i in range(50)) if store.shard_of(u) == shard][:1]
    records = {
        "p1": {"user": "ann", "items": {"a": {"features": {"item=a": 1.0}, "score": 0.5}}},
        "p2": {"user": "ann", "items": {}},
        "p3": {"user": others[0], "items": {}},
    }
    store.predictions.put_predictions(shard, records, ttl_s=60)
    assert set(store.predictions.get_predictions(shard, ["p1", "p2", "p3"])) == {"p1", "p2", "p3"}
    assert store.predictions.delete_user(shard, "ann") == 2
    assert set(store.predictions.get_predictions(shard, ["p1", "p2", "p3"])) == {"p3"}
    assert store.predictions.delete_user(shard, "ann") == 0
