"""The trainer's telemetry: its published snapshot against what it did and what Redis holds,
and the merge of several trainers' snapshots into the dashboard's figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import REGISTRY

from fedlearn.model import Base
from fedlearn.model.gating import Gate
from fedlearn.store import Store
from fedlearn.telemetry import trainer as trainer_metrics
from fedlearn.telemetry.summary import histogram_quantile, summarize
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.trainer import Trainer, TrainerConfig
from tests.test_trainer import append

N_USERS = 40
EVENTS_PER_USER = 12


def events_for(users: range, first: int, per_user: int) -> list[dict]:
    """Even users alternate click and skip on one item (a clone learning at a high rate
    chases each label and predicts the next one worse than the base); odd users always
    click (their clone learns it and beats the base)."""
    events = []
    for step in range(first, first + per_user):
        for u in users:
            signal = "click" if u % 2 or step % 2 == 0 else "skip"
            events.append(
                {"event_id": f"e{u}-{step}", "user": f"u{u}", "item": "7", "signal": signal,
                 "ts": 1.7e9 + step}
            )  # fmt: skip
    return events


def drain(trainer: Trainer) -> int:
    applied = 0
    while n := trainer.step():
        applied += n
    return applied


@pytest.fixture
def trainer(store: Store) -> Trainer:
    base = Base.fresh([f"item={i}" for i in range(10)], 4, version="1")
    store.bases.put_base("1", base.to_bytes(), {"generation": 0})
    store.bases.set_current("1")
    clone = CloneSettings(lr=3.0, l2=0.0, bias_lr=3.0)
    running = Trainer(store, lambda _: clone, TrainerConfig(name="t1", batch_size=64))
    running.ownership.maintain()
    assert running.owned == set(store.shards)
    return running


def test_the_snapshot_tells_what_the_trainer_did(store: Store, trainer: Trainer) -> None:
    publisher = trainer.telemetry
    publisher.publish(trainer.telemetry_state())  # the baseline: windows count from here
    append(store, events_for(range(N_USERS), 0, EVENTS_PER_USER))
    assert drain(trainer) == N_USERS * EVENTS_PER_USER

    snap = publisher.publish(trainer.telemetry_state())
    assert store.telemetry.snapshots() == [snap]
    assert snap["owner"] == trainer.owner and snap["name"] == "t1"
    assert snap["shards"] == [0, 1, 2, 3]
    assert snap["window_applied"] == N_USERS * EVENTS_PER_USER
    clone = snap["progressive"]["all"]["clone"]
    assert clone["window_events"] == N_USERS * EVENTS_PER_USER
    assert snap["progressive"]["first"]["base"]["window_events"] == N_USERS * 5
    assert sum(snap["freshness"]["window"]) > 0

    # The gate counts come from the trainer's memory; the store keeps each user's gate
    # beside the delta: both must tell the same story.
    eta = trainer.config.gating.eta
    served = {"clone": 0, "base": 0}
    for shard in store.shards:
        for record in store.deltas.iter_shard(shard):
            served[Gate.from_bytes(record.gate).serve(eta)] += 1
    assert snap["users"] == {"cached": N_USERS, "served_base": served["base"]}
    assert 0 < served["base"] < N_USERS, "the data must make the gate pick both ways"
    gauge = REGISTRY.get_sample_value("fedlearn_gate_users", {"served": "base"})
    assert gauge == served["base"]

    assert publisher.maybe_publish(trainer.telemetry_state) is False  # too soon after the last one
    append(store, events_for(range(N_USERS), EVENTS_PER_USER, 2))
    assert drain(trainer) == 2 * N_USERS
    later = publisher.publish(trainer.telemetry_state())
    assert later["window_applied"] == 2 * N_USERS
    assert later["progressive"]["first"]["clone"]["window_events"] == 0  # nobody's first
    assert later["applied"] - snap["applied"] == 2 * N_USERS

    publisher.withdraw()
    assert store.telemetry.snapshots() == []


def test_histogram_quantile_interpolates_within_buckets() -> None:
    bounds = [0.1, 0.5, 1.0, math.inf]
    assert histogram_quantile(0.5, bounds, [0, 10, 0, 0]) == pytest.approx(0.3)
    assert histogram_quantile(0.25, bounds, [10, 10, 0, 0]) == pytest.approx(0.05)
    assert histogram_quantile(0.99, bounds, [1, 0, 0, 99]) == 1.0  # +Inf: the last bound
    assert histogram_quantile(0.5, bounds, [0, 0, 0, 0]) is None
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, 100_000)
    edges = [0.2, 0.4, 0.6, 0.8, 1.0, math.inf]
    counts = np.histogram(values, [0.0, *edges[:-1], 2.0])[0].tolist()
    assert histogram_quantile(0.9, edges, counts) == pytest.approx(0.9, abs=0.01)
    with pytest.raises(ValueError, match="q must be"):
        histogram_quantile(1.5, bounds, [1, 1, 1, 1])


def _snapshot(owner: str, *, applied: int, window: int, auc: float, scored: int, fresh: list):
    figures = {
        "auc": auc, "events": scored, "loss_sum": 0.5 * scored,
        "window_events": window, "window_loss_sum": 0.4 * window,
    }  # fmt: skip
    return {
        "owner": owner, "name": owner.split("@")[0], "at": 1000.0, "interval_s": 2.0,
        "shards": [0], "applied": applied, "window_applied": window,
        "freshness": {"le": [0.1, 1.0], "window": fresh},
        "progressive": {"all": {"clone": figures}},
        "users": {"cached": 10, "served_base": 3},
    }  # fmt: skip


def test_summarize_adds_windows_and_weights_auc_by_events() -> None:
    merged = summarize(
        [
            _snapshot("a@h", applied=100, window=20, auc=0.8, scored=30_000, fresh=[4, 0, 0]),
            _snapshot("b@h", applied=50, window=10, auc=0.6, scored=10_000, fresh=[0, 4, 0]),
        ],
        now=1003.0,
    )
    assert merged["applied"] == 150 and merged["rate"] == pytest.approx(15.0)
    assert merged["cached_users"] == 20 and merged["served_base"] == 6
    clone = merged["progressive"]["all"]["clone"]
    # Weights are capped at the AUC window (20,000 events): 0.8 and 0.6 weigh 2:1.
    assert clone["auc"] == pytest.approx((2 * 0.8 + 0.6) / 3)
    assert clone["window_log_loss"] == pytest.approx(0.4) and clone["log_loss"] == 0.5
    assert merged["freshness"]["events"] == 8
    assert merged["freshness"]["p50"] == pytest.approx(0.1)
    assert [t["age_s"] for t in merged["trainers"]] == [3.0, 3.0]
    assert summarize([])["freshness"] == {"p50": None, "p99": None, "events": 0}


def test_batches_observed_close_together_all_reach_the_metrics() -> None:
    """The trainer's metrics take batches a few at a time: none is lost on the way."""
    scored = ("fedlearn_progressive_events_total", {"model": "clone", "events": "all"})
    fresh = ("fedlearn_freshness_seconds_count", {})
    trainer_metrics.flush()
    before = [REGISTRY.get_sample_value(*s) or 0.0 for s in (scored, fresh)]
    for size in (3, 5, 7):  # within FLUSH_EVERY_S of each other: grouped
        y = np.arange(size) % 2.0
        trainer_metrics.observe_progressive(y, np.full(size, 0.6), np.full(size, 0.5),
                                            np.arange(size))  # fmt: skip
        trainer_metrics.observe_freshness(np.zeros(size), 1000.0)
    trainer_metrics.flush()
    after = [REGISTRY.get_sample_value(*s) or 0.0 for s in (scored, fresh)]
    assert after[0] - before[0] == 15  # every event scored
    assert after[1] - before[1] == 15  # fewer than FRESHNESS_SAMPLES: every one observed
