"""The trainer against a real redis-server: exactly-once application, recovery, the event log."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fedlearn.model import Base, Delta, event_features, learn_many
from fedlearn.store import Store
from fedlearn.stream.apply import CloneSettings
from fedlearn.stream.eventlog import EventLogWriter, read_log
from fedlearn.stream.trainer import Trainer, TrainerConfig

CLONE = CloneSettings(lr=0.05, l2=0.01, bias_lr=0.1)


def publish(store: Store, base: Base) -> None:
    store.bases.put_base(base.version, base.to_bytes(), {"generation": 0})
    store.bases.set_current(base.version)


def make_events(n: int, n_users: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "event_id": f"e{i}",
            "user": f"u{rng.integers(n_users)}",
            "item": str(rng.integers(30)),
            "signal": "click" if rng.random() < 0.4 else "skip",
            "ts": 1_700_000_000.0 + i,
            "context": {"hour": str(rng.integers(24))},
        }
        for i in range(n)
    ]


def append(store: Store, events: list[dict]) -> None:
    by_shard: dict[int, list[dict]] = {}
    for event in events:
        by_shard.setdefault(store.shard_of(event["user"]), []).append(event)
    for shard, batch in by_shard.items():
        store.streams.append_events(shard, batch)


def expected_deltas(base: Base, events: list[dict]) -> dict[str, Delta]:
    """What the users' deltas must be: every event applied once, each user's in order."""
    deltas: dict[str, Delta] = {}
    samples = [
        (e["user"], event_features(e["user"], e["item"], e["context"]), int(e["signal"] == "click"))
        for e in events
    ]
    learn_many(base, deltas, samples, CLONE.lr, CLONE.l2, CLONE.bias_lr)
    return deltas


def run_until(trainer: Trainer, done, timeout: float = 20.0) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=trainer.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
    assert done(), "the trainer did not finish in time"


def stored_deltas(store: Store, users: set[str]) -> dict[str, Delta]:
    out = {}
    for user in users:
        record = store.deltas.get(store.shard_of(user), user)
        assert record is not None, f"user {user} has no delta"
        out[user] = Delta.from_bytes(record.delta)
    return out


def assert_same(got: dict[str, Delta], want: dict[str, Delta]) -> None:
    assert set(got) == set(want)
    for user, delta in want.items():
        other = got[user]
        assert other.n_events == delta.n_events, user
        assert sorted(other.names) == sorted(delta.names)
        rows = other.rows_of(delta.names)
        np.testing.assert_allclose(other._w[rows], delta.w, atol=2e-6)
        np.testing.assert_allclose(other._v[rows], delta.v, atol=2e-6)
        assert other.w0 == pytest.approx(delta.w0, abs=2e-6)


def test_every_event_is_applied_once_and_logged(store: Store, tmp_path: Path) -> None:
    base = Base.fresh([f"item={i}" for i in range(20)], 4, version="b1")
    publish(store, base)
    events = make_events(600, 25)
    append(store, events)
    log = EventLogWriter(store, tmp_path / "log")
    trainer = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=64), eventlog=log)
    users = {e["user"] for e in events}

    def applied() -> bool:
        return trainer.applied_total >= len(events)

    run_until(trainer, applied)
    assert_same(stored_deltas(store, users), expected_deltas(base, events))
    records = list(read_log(tmp_path / "log"))
    assert sorted(r["event_id"] for r in records) == sorted(e["event_id"] for e in events)
    assert all(0.0 < r["prediction"] < 1.0 and r["features"] for r in records)
    assert all(store.streams.pending_count(s) == 0 for s in store.shards)


def test_a_dead_owners_pending_batch_is_redone_once(store: Store, tmp_path: Path) -> None:
    base = Base.fresh([f"item={i}" for i in range(20)], 4, version="b1")
    publish(store, base)
    events = make_events(300, 10, seed=1)
    append(store, events)
    # A trainer that read a batch of every shard and died before committing: the entries are
    # pending for its consumer, and its leases expire.
    for shard in store.shards:
        store.streams.ensure_group(shard)
        assert store.leases.acquire(shard, "dead-trainer", 50)
        store.streams.read_batch(shard, "dead-trainer", count=40, block_ms=0)
    assert sum(store.streams.pending_count(s) for s in store.shards) > 0
    time.sleep(0.1)
    trainer = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=50))
    run_until(trainer, lambda: trainer.applied_total >= len(events))
    assert trainer.applied_total == len(events)
    assert_same(stored_deltas(store, {e["user"] for e in events}), expected_deltas(base, events))


def test_a_redelivered_event_is_skipped(store: Store) -> None:
    base = Base.fresh([f"item={i}" for i in range(5)], 4, version="b1")
    publish(store, base)
    events = make_events(40, 3, seed=2)
    append(store, events)
    trainer = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=100))
    run_until(trainer, lambda: trainer.applied_total >= len(events))
    # Pretend the acknowledgements were lost: put every entry back as new for a fresh group.
    for shard in store.shards:
        store.client.xgroup_setid(f"fl:{{s{shard}}}:stream", "trainers", "0")
    second = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=100))
    second.ownership.maintain()
    for shard in second.owned:
        second.shards[shard].recovering = False
    applied = sum(second.step() for _ in range(3))
    assert applied == 0
    assert_same(stored_deltas(store, {e["user"] for e in events}), expected_deltas(base, events))
