"""Rounds that heal: a heartbeat kept while a round's tasks work, and the watchdog that
abandons a round whose heartbeat stopped, releases its lock and retries it (the Celery side,
with a SIGKILLed worker, is in ``test_faults_rounds.py``)."""

from __future__ import annotations

import time

import numpy as np

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.heal import MAX_ATTEMPTS, heal_rounds
from fedlearn.aggregate.heartbeat import beating
from fedlearn.aggregate.mapper import map_shard
from fedlearn.aggregate.run import begin_round, create_round, reduce_round, rounds_of
from fedlearn.aggregate.synthetic import publish, write_deltas
from fedlearn.model import Base, Delta
from fedlearn.store import Store

K = 2
STALE_S = 0.5
CONFIG = AggregationConfig(min_users=1, min_row_users=1, buckets=2, stale_s=STALE_S)


def started_round(store: Store, *, attempt: int = 1) -> str:
    """A round that began (it holds the lock and is ``running``), then lost its worker."""
    base = Base.fresh(["item=a", "item=b"], K, version="1")
    publish(store, base)
    users = {}
    for i, value in enumerate((0.2, 0.4)):
        d = Delta(K)
        d._w[d.rows_of(["item=a"])] = value
        d.n_events = 2
        users[f"u{i}"] = d
    write_deltas(store, users, base="1")
    rounds = rounds_of(store)
    extra = {"retry_of": "earlier", "attempt": attempt} if attempt > 1 else {}
    round_id = create_round(rounds, CONFIG, **extra)  # type: ignore[arg-type]
    assert begin_round(store, rounds, round_id)
    return round_id


def test_a_round_with_a_stale_heartbeat_is_abandoned_and_retried(store: Store) -> None:
    rounds = rounds_of(store)
    dead = started_round(store)
    fresh = heal_rounds(store, rounds, stale_s=STALE_S)
    assert fresh.abandoned == [] and 0 < (fresh.recheck_s or 0) <= STALE_S  # watched
    time.sleep(STALE_S + 0.1)
    healed = heal_rounds(store, rounds, stale_s=STALE_S, by="test")
    assert healed.abandoned == [dead] and len(healed.retries) == 1
    record = rounds.get(dead)
    assert record is not None and record["status"] == "abandoned"
    assert "no heartbeat for" in record["error"] and "abandoned by test" in record["error"]
    assert record["retried_by"] == healed.retries[0]
    assert rounds.lock_holder() is None  # released now, not at the lock's TTL
    retry = rounds.get(healed.retries[0])
    assert retry is not None and retry["status"] == "queued"
    assert retry["retry_of"] == dead and retry["attempt"] == 2
    assert retry["config"] == CONFIG.to_json()
    # a second watchdog at the same time finds nothing left to do
    assert heal_rounds(store, rounds, stale_s=STALE_S).abandoned == []


def test_the_last_attempt_is_not_retried_again(store: Store) -> None:
    rounds = rounds_of(store)
    dead = started_round(store, attempt=MAX_ATTEMPTS)
    time.sleep(STALE_S + 0.1)
    healed = heal_rounds(store, rounds, stale_s=STALE_S)
    assert healed.abandoned == [dead] and healed.retries == []
    assert "no retry" in rounds.get(dead)["retry_note"]  # type: ignore[index]


def test_a_round_dead_after_publishing_is_finished_not_abandoned(store: Store) -> None:
    rounds = rounds_of(store)
    round_id = started_round(store)
    for shard in store.shards:
        map_shard(store, rounds, round_id, shard)
    reduce_round(store, rounds, round_id)  # published; the worker died before promoting
    time.sleep(STALE_S + 0.1)
    healed = heal_rounds(store, rounds, stale_s=STALE_S)
    assert healed.finished == [round_id] and healed.abandoned == []
    assert rounds.get(round_id)["status"] == "done"  # type: ignore[index]
    assert rounds.lock_holder() is None and store.bases.current_version() == "2"


def test_a_working_round_keeps_its_heartbeat_and_lock(store: Store) -> None:
    rounds = rounds_of(store)
    round_id = started_round(store)
    with beating(rounds, round_id):
        time.sleep(3 * STALE_S)  # a long task: the thread beats every stale_s / 6
        assert heal_rounds(store, rounds, stale_s=STALE_S).abandoned == []
        ttl = store.client.pttl(rounds.lock_key())
    assert ttl > (CONFIG.lock_ttl_s - 2) * 1000
    record = rounds.get(round_id)
    assert record is not None and record["status"] == "running"
    assert np.isclose(record["heartbeat_at"], rounds.clock(), atol=STALE_S)
