"""Drift: the detectors (pure), their record in a real Redis, the trainer that feeds them, the
actions sent to a real Celery broker, the replay's report and the synthetic shift."""

from __future__ import annotations

import threading
import time

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY

from fedlearn.config import load_settings
from fedlearn.data.synthetic import SyntheticConfig, generate
from fedlearn.evaluate.replay import ReplayConfig
from fedlearn.jobs.app import START_ROUND, make_celery
from fedlearn.jobs.drift import DriftActions
from fedlearn.model import Base
from fedlearn.store import Store
from fedlearn.store.drift import DriftEvent
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.drift import DriftDetectors, DriftMonitor, DriftSettings, unseen_shares
from fedlearn.trainer.trainer import Trainer, TrainerConfig

CLONE = CloneSettings(lr=0.05, l2=0.01, bias_lr=0.1)
SETTINGS = DriftSettings(chunk_events=32, delta=1e-4)


def signals(labels: np.ndarray, loss: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "clone_loss": loss,
        "base_loss": loss,
        "click_rate": labels,
        "unseen_share": np.zeros(max(1, len(labels) // 16)),
    }


def stream(n: int, p_click: float, loss: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < p_click).astype(float), rng.normal(loss, 0.3, n).clip(0.0)


def feed(detectors: DriftDetectors, labels, loss, batch: int, shard: int | None = 0) -> list:
    found = []
    for start in range(0, len(labels), batch):
        end = start + batch
        found += detectors.observe(shard, signals(labels[start:end], loss[start:end]))
    return found


def test_a_shift_is_found_per_shard_and_overall_and_a_steady_stream_raises_nothing() -> None:
    calm = stream(60_000, 0.3, 0.6, seed=1)
    detectors = DriftDetectors(SETTINGS)
    assert feed(detectors, *calm, batch=500) == []
    shifted = stream(20_000, 0.7, 0.9, seed=2)
    found = feed(detectors, *shifted, batch=500)
    kinds = {(e.signal, e.shard) for e in found}
    assert {("clone_loss", 0), ("clone_loss", None), ("click_rate", 0)} <= kinds
    first = min(e.events for e in found if e.signal == "clone_loss")
    assert 60_000 < first < 65_000  # seen within 5,000 events of the shift
    up = next(e for e in found if e.signal == "clone_loss")
    assert up.after > up.before and up.magnitude == pytest.approx(up.after - up.before)


def test_a_falling_loss_is_learning_not_drift() -> None:
    detectors = DriftDetectors(SETTINGS)
    labels = np.zeros(80_000)
    loss = np.r_[np.full(40_000, 0.9), np.full(40_000, 0.4)]
    found = feed(detectors, labels, loss, batch=1000)
    assert not [e for e in found if e.signal in ("clone_loss", "base_loss")]


def test_what_the_detectors_see_does_not_depend_on_the_batch_sizes() -> None:
    (calm_y, calm_loss), (shift_y, shift_loss) = (
        stream(30_000, 0.3, 0.6, 3),
        stream(10_000, 0.8, 1.0, 4),
    )
    labels, loss = np.r_[calm_y, shift_y], np.r_[calm_loss, shift_loss]
    one = feed(DriftDetectors(SETTINGS), labels, loss, batch=1000)
    other = feed(DriftDetectors(SETTINGS), labels, loss, batch=37)
    seen = sorted((e.signal, str(e.shard), e.events) for e in one)
    assert seen and seen == sorted((e.signal, str(e.shard), e.events) for e in other)


def test_unseen_share_leaves_users_own_features_aside() -> None:
    base = Base.fresh(["item=1", "genre=a"], 2, version="1")
    features = [{"user=new": 1.0, "item=1": 1.0, "genre=a": 1.0}, {"item=2": 1.0, "genre=a": 1.0}]
    np.testing.assert_allclose(unseen_shares(features, base), [0.0, 0.5])


def test_drift_events_are_kept_bounded_newest_first_and_an_action_is_claimed_once(
    store: Store,
) -> None:
    with pytest.raises(ValueError, match="drift signal must be one of"):
        DriftEvent("latency", 0, 0.1, 0.2, 10)
    log = store.drift
    ids = [log.record(DriftEvent("clone_loss", s, 0.5, 0.7, 100 * s)) for s in range(3)]
    latest = log.latest(limit=2)
    assert [e.id for e in latest] == ids[::-1][:2] and latest[0].shard == 2
    assert log.count_since(time.time() - 60) == 3 and log.count_since(time.time() + 60) == 0
    with pytest.raises(ValueError, match="limit must be an int"):
        log.latest(limit=0)
    assert log.claim("early_round", 30) and not log.claim("early_round", 30)
    with pytest.raises(ValueError, match="drift action must be one of"):
        log.claim("reboot", 30)


def test_the_trainer_records_a_click_rate_shift_with_what_it_did(store: Store) -> None:
    base = Base.fresh([f"item={i}" for i in range(30)], 4, version="1")
    store.bases.put_base(base.version, base.to_bytes(), {"generation": 0})
    store.bases.set_current(base.version)
    rng = np.random.default_rng(0)
    events = [
        {
            "event_id": f"e{i}", "user": f"u{rng.integers(50)}", "item": str(rng.integers(30)),
            "signal": "click" if rng.random() < (0.1 if i < 6000 else 0.9) else "skip",
            "ts": 1_700_000_000.0 + i,
        }
        for i in range(9000)
    ]  # fmt: skip
    acted: list[DriftEvent] = []

    def act(event: DriftEvent) -> dict:
        acted.append(event)
        return {"early_round": {"outcome": "throttled"}}

    monitor = DriftMonitor(store.drift, trainer="t1", settings=SETTINGS, act=act)
    trainer = Trainer(store, lambda _b: CLONE, TrainerConfig(batch_size=500), drift=monitor)
    before = REGISTRY.get_sample_value("fedlearn_drift_events_total", {"signal": "click_rate"})
    for start in range(0, len(events), 500):  # in order, so the shift comes at a known place
        for event in events[start : start + 500]:
            store.streams.append_events(store.shard_of(event["user"]), [event])
    stop = threading.Event()
    thread = threading.Thread(target=trainer.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 30
    while trainer.applied_total < len(events) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert trainer.applied_total == len(events)
    recorded = store.drift.latest(limit=100)
    rates = [e for e in recorded if e.signal == "click_rate"]
    assert rates and all(e.after > e.before for e in rates)
    assert {e.shard for e in rates} & {None}, "the overall detector saw it too"
    assert all(e.trainer == "t1" and e.actions for e in recorded)
    assert len(acted) == len(recorded)
    after = REGISTRY.get_sample_value("fedlearn_drift_events_total", {"signal": "click_rate"})
    assert after - (before or 0) == len(rates)


@pytest.fixture
def celery_settings(redis_url: str, tmp_path):
    return load_settings(
        redis_url=redis_url, n_shards=2, data_dir=tmp_path, drift_retrain_events=2,
        drift_early_round_min_s=60,
    )  # fmt: skip


def test_drift_starts_one_early_round_per_interval_and_proposes_a_retrain_when_it_persists(
    store: Store, celery_settings
) -> None:
    celery = make_celery(celery_settings)
    actions = DriftActions(store, celery_settings)
    first = DriftEvent("clone_loss", 0, 0.5, 0.8, 1000)
    done = actions(first)
    round_id = done["early_round"]["round"]
    assert done["early_round"]["outcome"] == "started" and "retrain" not in done
    record = store.rounds.get(round_id)
    assert record["trigger"] == "drift" and record["status"] == "queued"
    queued = [orjson.loads(m) for m in store.client.lrange("celery", 0, -1)]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in queued] == [
        (START_ROUND, repr([round_id]))
    ]
    store.drift.record(first)
    again = actions(DriftEvent("click_rate", None, 0.3, 0.6, 2000))
    assert again["early_round"] == {"outcome": "throttled"}
    assert again["retrain"]["outcome"] == "proposed"
    assert actions(first)["retrain"]["outcome"] == "throttled"  # one per window
    assert store.client.llen("celery") == 1
    celery.close()


def test_no_early_round_while_another_round_holds_the_lock(store: Store, celery_settings) -> None:
    assert store.rounds.acquire_lock("r-running", 60_000)
    done = DriftActions(store, celery_settings)(DriftEvent("base_loss", 1, 0.5, 0.8, 10))
    assert done["early_round"] == {"outcome": "round_running", "round": "r-running"}
    assert store.client.llen("celery") == 0


def test_a_synthetic_shift_changes_only_what_comes_after_it() -> None:
    common = {"n_users": 200, "events_per_user": 20, "seed": 5}
    calm, shifted = (
        generate(SyntheticConfig(**common)),
        generate(SyntheticConfig(**common, shift_at=0.5)),
    )
    at = np.searchsorted(calm.ts, calm.config.start_ts + 0.5 * calm.config.days * 86_400)
    np.testing.assert_array_equal(calm.p[:at], shifted.p[:at])
    assert np.abs(calm.p[at:] - shifted.p[at:]).mean() > 0.05
    with pytest.raises(ValueError, match="'shift_at' must be in"):
        SyntheticConfig(shift_at=1.5)


def test_the_replay_reports_the_shift_it_would_have_raised() -> None:
    from fedlearn.evaluate.drift import replay_drift
    from fedlearn.model import TrainConfig, event_features, train_base

    # One seed of a small log with strong tastes (a unit test's budget); BENCHMARKS.md has the
    # delays over 10 seeds of a larger one.
    config = SyntheticConfig(n_users=600, events_per_user=100, seed=1, shift_at=0.6, taste_scale=3)
    log = generate(config)
    items = log.items()
    events = [
        (e.user, event_features(e.user, e.item, e.context, items[e.item]), e.label)
        for e in log.events()
    ]
    cut = len(events) // 5
    base = train_base([(x, y) for _, x, y in events[:cut]], TrainConfig(epochs=3)).base
    shift = int(np.searchsorted(log.ts, log.config.start_ts + 0.6 * 90 * 86_400)) - cut
    found = replay_drift(
        events[cut:], log.ts[cut:], base, settings=ReplayConfig().clone_settings(), round_every=5000
    )
    after = [d for d in found if d.index > shift]
    assert after and after[0].index - shift < 10_000
    assert after[0].to_dict()["ts"] >= log.ts[cut + shift]


def test_the_dashboard_data_carries_the_latest_drift_events(store: Store) -> None:
    from fedlearn.telemetry.dashboard import DashboardData, dashboard_data

    store.drift.record(
        DriftEvent("unseen_share", None, 0.01, 0.2, 500, trainer="t", actions={"early_round": {}})
    )
    data = dashboard_data(store.telemetry, drift=store.drift)
    assert [(d["signal"], d["shard"], d["trainer"]) for d in data["drift"]] == [
        ("unseen_share", None, "t")
    ]
    assert DashboardData.model_validate(data).drift[0].magnitude == pytest.approx(0.19)


def test_the_alert_rules_name_the_exported_metrics() -> None:
    from pathlib import Path

    import yaml

    rules = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "monitoring" / "drift.rules.yml").read_text()
    )
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    assert "fedlearn_drift_events_total" in exprs and "fedlearn_drift_actions_total" in exprs


def test_persistent_drift_starts_the_retrain_when_so_configured(
    store: Store, redis_url: str, tmp_path
) -> None:
    from fedlearn.jobs.app import MONTHLY

    settings = load_settings(
        redis_url=redis_url, n_shards=2, data_dir=tmp_path, drift_retrain="start",
        drift_retrain_events=1, drift_early_round=False,
    )  # fmt: skip
    done = DriftActions(store, settings)(DriftEvent("unseen_share", None, 0.0, 0.3, 64))
    assert done == {"retrain": {"outcome": "started", "recent": 1, "at": done["retrain"]["at"]}}
    queued = [orjson.loads(m)["headers"]["task"] for m in store.client.lrange("celery", 0, -1)]
    assert queued == [MONTHLY]
