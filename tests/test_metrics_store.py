"""What the store tells an operator: per-shard stream state and rounds, read at scrape time,
against a real redis-server (``store.telemetry``)."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.run import run_round_inline
from fedlearn.aggregate.synthetic import random_deltas, write_deltas
from fedlearn.model import Base, Delta
from fedlearn.store import Store, StreamId
from fedlearn.store.telemetry import MAX_SNAPSHOT_BYTES
from fedlearn.telemetry.collector import StoreCollector

SHARD = 2


def users_of(store: Store, shard: int, n: int) -> list[str]:
    return [u for u in (f"user{i}" for i in range(2000)) if store.shard_of(u) == shard][:n]


def append(store: Store, users: list[str], n: int) -> None:
    events = [{"event_id": f"e{i}", "user": users[i % len(users)], "item": "1"} for i in range(n)]
    assert store.streams.append_events(SHARD, events).accepted == n


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_shard_stats_follow_a_stream_from_ingest_to_commit(store: Store) -> None:
    telemetry = store.telemetry
    users = users_of(store, SHARD, 2)
    append(store, users, 10)
    before = {s.shard: s for s in telemetry.shard_stats()}
    assert before[SHARD].length == 10 and before[SHARD].lag_events == 10  # no trainer yet
    assert before[SHARD].pending == 0 and before[SHARD].holder is None
    assert all(before[s].length == 0 and before[s].lag_seconds == 0 for s in (0, 1, 3))

    assert store.leases.acquire(SHARD, "t1", 30_000)
    store.streams.ensure_group(SHARD)
    batch = store.streams.read_batch(SHARD, "t1", count=4, block_ms=0)
    batch.extend(store.streams.read_batch(SHARD, "t1", count=1, block_ms=0))
    assert len(batch) == 5
    unread = store.client.xrange(f"fl:{{s{SHARD}}}:stream", min=f"({batch.ids[-1]}", count=1)
    oldest_unread_ms = StreamId.parse(unread[0][0]).ms
    now_ms = oldest_unread_ms + 2500
    mid = {s.shard: s for s in telemetry.shard_stats(now_ms=now_ms)}[SHARD]
    assert (mid.length, mid.pending, mid.lag_events) == (10, 5, 5)
    assert mid.lag_seconds == pytest.approx(2.5)
    assert mid.holder == "t1"

    last = {e.event["user"]: e.id for e in batch}
    store.streams.commit_batch(
        SHARD, owner="t1", deltas={u: Delta(2).to_bytes() for u in last}, last_ids=last,
        entry_ids=batch.ids, base="v1", generation=0,
    )  # fmt: skip
    store.streams.trim_acked(SHARD)
    after = {s.shard: s for s in telemetry.shard_stats()}[SHARD]
    assert (after.length, after.pending, after.lag_events, after.users) == (5, 0, 5, 2)

    everything = store.streams.read_batch(SHARD, "t1", count=100, block_ms=0)
    assert len(everything) == 5
    drained = {s.shard: s for s in telemetry.shard_stats()}[SHARD]
    assert drained.lag_seconds == 0 and drained.pending == 5


def test_the_collector_exposes_each_shard_as_the_store_sees_it(store: Store) -> None:
    users = users_of(store, SHARD, 3)
    append(store, users, 7)
    store.leases.acquire(SHARD, "t9", 30_000)
    registry = CollectorRegistry()
    telemetry = store.telemetry
    registry.register(StoreCollector(telemetry, rounds=False))
    samples = scrape(registry)
    stats = telemetry.shard_stats()
    for row in stats:
        label = (("shard", str(row.shard)),)
        assert samples[("fedlearn_stream_length", label)] == row.length
        assert samples[("fedlearn_stream_lag_events", label)] == row.lag_events
        assert samples[("fedlearn_shard_owned", label)] == (1.0 if row.holder else 0.0)
    assert samples[("fedlearn_stream_length", (("shard", str(SHARD)),))] == 7
    assert not any(name.startswith("fedlearn_round") for name, _ in samples)


def test_the_collector_reports_the_latest_published_round(store: Store) -> None:
    base = Base.fresh([f"item={i}" for i in range(50)], 4, version="1")
    store.bases.put_base("1", base.to_bytes(), {"generation": 0})
    store.bases.set_current("1")
    deltas = random_deltas(np.random.default_rng(3), 40, n_factors=4, n_items=50, scale=0.5)
    write_deltas(store, deltas, base="1")
    config = AggregationConfig(strategy="fedavg", clip_norm=0.5, min_users=2, min_row_users=1)
    record = run_round_inline(store, config)
    assert record["status"] == "done"
    result = record["result"]

    registry = CollectorRegistry()
    registry.register(StoreCollector(store.telemetry, shards=False))
    samples = scrape(registry)
    assert samples[("fedlearn_round_users", ())] == result["users"] == 40
    clipped = result["clipped_users"] / result["users"]
    assert 0 < clipped <= 1, "a clip norm of 0.5 must clip some of these deltas"
    assert samples[("fedlearn_round_clipped_fraction", ())] == pytest.approx(clipped)
    assert samples[("fedlearn_round_events", ())] == result["events"]
    assert samples[("fedlearn_round_duration_seconds", ())] > 0
    assert samples[("fedlearn_rounds_recent", (("status", "done"),))] == 1
    assert samples[("fedlearn_rounds_recent", (("status", "failed"),))] == 0
    current = store.bases.current_version()
    assert current == result["version"] == "2"
    assert samples[("fedlearn_base_version_info", (("version", "2"),))] == 1
    assert samples[("fedlearn_base_published_timestamp_seconds", ())] > 1.7e9
    ended = samples[("fedlearn_round_last_end_timestamp_seconds", (("status", "done"),))]
    assert ended == pytest.approx(record["finished_at"])


def test_snapshots_expire_and_refuse_per_user_lists(store: Store) -> None:
    telemetry = store.telemetry
    telemetry.publish("t1@h:1:a", {"applied": 5}, ttl_s=30)
    telemetry.publish("t2@h:2:b", {"applied": 7}, ttl_s=30)
    assert sorted(s["applied"] for s in telemetry.snapshots()) == [5, 7]
    telemetry.withdraw("t1@h:1:a")
    assert [s["applied"] for s in telemetry.snapshots()] == [7]
    assert telemetry.snapshots(max_age_s=-1) == []  # too old to count: dropped from the index
    assert store.client.zcard("fl:{telemetry}:trainers") == 0
    with pytest.raises(ValueError, match="per-user"):
        telemetry.publish("t3@h:3:c", {"users": ["u"] * MAX_SNAPSHOT_BYTES})
    with pytest.raises(ValueError, match="ttl_s"):
        telemetry.publish("t3@h:3:c", {}, ttl_s=0)
