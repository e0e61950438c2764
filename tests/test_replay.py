"""The offline replay: every arm on a synthetic log in seconds, its JSON and table, its errors,
the aggregation round, and (when the data is there) MovieLens."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedlearn.cli import main
from fedlearn.config import Settings
from fedlearn.data.synthetic import SyntheticConfig, write_synthetic
from fedlearn.evaluate.arms import AggregatedClonesArm, ClonesArm, GatedClonesArm
from fedlearn.evaluate.compare import METRICS, LiveEvents, paired_bootstrap, share_worse
from fedlearn.evaluate.plot import progressive_auc_svg
from fedlearn.evaluate.replay import ALL_ARMS, ReplayConfig, _make_arms, replay
from fedlearn.evaluate.tuning import tune
from fedlearn.model import Base, Clone, Delta
from fedlearn.model.gating import GateSettings
from fedlearn.model.metrics import roc_auc
from fedlearn.trainer.apply import CloneSettings


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 users with strong, fixed genre tastes; 3,200 events."""
    out = tmp_path_factory.mktemp("data") / "syn"
    config = SyntheticConfig(
        n_users=80, n_items=60, n_genres=6, events_per_user=40, taste_scale=2.0, seed=1
    )
    write_synthetic(out, config)
    return out


@pytest.fixture(scope="module")
def all_arms(synthetic_dir: Path) -> dict:
    result = CliRunner().invoke(
        main, ["replay", str(synthetic_dir), "--arms", ",".join(ALL_ARMS), "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_has_every_arm_and_the_split(all_arms: dict) -> None:
    names = [a["arm"] for a in all_arms["arms"]]
    expected = ["frozen", "global"]
    expected += [f"{arm} x{m}" for arm in ("clones", "clones-agg") for m in (1, 2, 4)]
    expected += ["clones-gated"]
    expected += ["river-frozen", "river-global", "river-clones", "river-clones-fedavg"]
    assert names == expected
    assert all_arms["n_train"] == all_arms["n_live"] == 1600
    assert all_arms["new_live_users"] <= all_arms["live_users"]
    for arm in all_arms["arms"]:
        assert arm["n"] == 1600
        assert 0.0 <= arm["auc"] <= 1.0 and 0.0 <= arm["gauc"] <= 1.0
        assert arm["log_loss"] > 0 and arm["seconds"] >= 0
        assert 0 < arm["n_first"] <= 5 * all_arms["live_users"]
    assert all_arms["config"]["arms"] == list(ALL_ARMS)


def test_clones_beat_the_frozen_base_on_strong_tastes(all_arms: dict) -> None:
    arms = {a["arm"]: a for a in all_arms["arms"]}
    frozen = arms["frozen"]
    for name in ("clones x1", "clones-agg x1", "global"):
        assert arms[name]["auc"] > frozen["auc"] + 0.05, name
        assert arms[name]["gauc"] > frozen["gauc"] + 0.03, name
        assert arms[name]["log_loss"] < frozen["log_loss"], name
    assert arms["river-clones"]["auc"] > arms["river-frozen"]["auc"] + 0.05


def test_the_gate_serves_close_to_the_better_of_clone_and_base(all_arms: dict) -> None:
    arms = {a["arm"]: a for a in all_arms["arms"]}
    gated = arms["clones-gated"]
    assert gated["gate_regret_mean"] is not None and gated["gate_regret_mean"] < 0.05
    assert gated["auc"] > arms["frozen"]["auc"] + 0.05
    assert all(a["gate_regret_mean"] is None for name, a in arms.items() if name != "clones-gated")


def test_users_arriving_after_the_first_rounds_are_scored_apart(synthetic_dir: Path) -> None:
    config = ReplayConfig(
        arms=("frozen", "clones-agg"), lr_multiples=(1.0,), agg_every=100, late_after_rounds=3,
        l2_grid=(),
    )  # fmt: skip
    result = replay(synthetic_dir, config)
    for arm in result.arms:
        assert arm.n_late_users > 0
        assert 0.0 <= arm.auc_late_users <= 1.0
    late_count = replay(synthetic_dir, replace(config, late_after_rounds=12)).arms[0].n_late_users
    assert late_count < result.arms[0].n_late_users, "a later cut leaves fewer late users"


def test_the_table_names_every_arm(synthetic_dir: Path) -> None:
    result = CliRunner().invoke(
        main, ["replay", str(synthetic_dir), "--arms", "frozen,clones", "--lr-multiple", "1,3"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("synthetic (seed 1): trained on 1,600 events")
    assert lines[1].startswith("'late users' first appear after the first 5 rounds")
    assert "AUC first 5" in lines[3] and "AUC late users" in lines[3]
    assert [line.split()[0] for line in lines[5:8]] == ["frozen", "clones", "clones"]
    assert "x3" in lines[7]
    # Then the reference arm (the first clones arm) minus the others, with intervals.
    assert lines[9].startswith("differences: arm minus against, [95 % paired bootstrap")
    assert [line.split()[:2] for line in lines[13:15]] == [["clones", "x1"]] * 2
    assert any(line.startswith("drift: ") for line in lines)


def test_limit_and_split(synthetic_dir: Path) -> None:
    config = ReplayConfig(arms=("frozen",), limit=1000, split=0.8, l2_grid=())
    result = replay(synthetic_dir, config)
    assert (result.n_train, result.n_live) == (800, 200)


def test_the_same_replay_gives_the_same_numbers(synthetic_dir: Path) -> None:
    config = ReplayConfig(arms=("clones-agg", "global"), lr_multiples=(1.0,), limit=1200)
    one, two = replay(synthetic_dir, config), replay(synthetic_dir, config)
    strip = [{**a.to_dict(), "seconds": 0} for a in one.arms]
    assert strip == [{**a.to_dict(), "seconds": 0} for a in two.arms]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--arms", "frozen,clonez"], 2, "unknown arm 'clonez'; choose from frozen, global"),
        (["--arms", ","], 2, "give at least one arm"),
        (["--lr-multiple", "1,x"], 2, "'x' is not a number"),
        (["--lr-multiple", "0"], 2, "lr multiples must be positive"),
        (["--split", "1.5"], 2, "--split"),
        (["--limit", "2", "--split", "0.1"], 1, "leave no events to train on"),
    ],
)
def test_bad_options_are_refused_clearly(
    synthetic_dir: Path, args: list[str], code: int, message: str
) -> None:
    result = CliRunner().invoke(main, ["replay", str(synthetic_dir), *args])
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["replay", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "nope: no such folder; make one with `fedlearn datasets" in result.output


def with_events(synthetic_dir: Path, folder: Path, events: bytes) -> Path:
    """``folder``: the synthetic dataset's catalog and manifest with ``events`` as its log."""
    folder.mkdir()
    for name in ("items.jsonl", "dataset.json"):
        (folder / name).write_bytes((synthetic_dir / name).read_bytes())
    (folder / "events.jsonl").write_bytes(events)
    return folder


def test_empty_log(tmp_path: Path, synthetic_dir: Path) -> None:
    empty = with_events(synthetic_dir, tmp_path / "empty", b"")
    result = CliRunner().invoke(main, ["replay", str(empty)])
    assert result.exit_code == 1
    assert "events.jsonl: holds no events; there is nothing to replay" in result.output


def test_a_bad_event_row_is_reported_with_its_line(tmp_path: Path, synthetic_dir: Path) -> None:
    lines = (synthetic_dir / "events.jsonl").read_bytes().splitlines(keepends=True)[:5]
    lines[2] = lines[2].replace(b'"click"', b'"clik"').replace(b'"skip"', b'"clik"')
    bad = with_events(synthetic_dir, tmp_path / "bad", b"".join(lines))
    result = CliRunner().invoke(main, ["replay", str(bad)])
    assert result.exit_code == 1
    assert "events.jsonl line 3:" in result.output and "clik" in result.output


# -- the aggregation round ---------------------------------------------------------------


def _base() -> Base:
    return Base.fresh(["item=a", "item=b", "genre=x"], n_factors=3, init_seed=5)


def test_aggregation_teaches_the_base_what_clones_learned() -> None:
    base = _base()
    arm = AggregatedClonesArm(base, settings=CloneSettings(lr=0.5, l2=0.0, bias_lr=0.5))
    x = {"user=1": 1.0, "item=hit": 1.0}
    arm.process([("1", x, 1)] * 5 + [("2", {"user=2": 1.0, "item=hit": 1.0}, 1)] * 5)
    assert arm.rounds == 1 and "item=hit" in arm.base.index
    newcomer = {"user=3": 1.0, "item=hit": 1.0}
    assert Clone(arm.base).predict_proba_one(newcomer) > Clone(base).predict_proba_one(newcomer)


@pytest.mark.parametrize(("min_row_users", "item_folded"), [(None, True), (2, False)])
def test_the_replay_s_rounds_fold_a_row_one_user_moved_as_the_service_s_default_does(
    min_row_users: int | None, item_folded: bool
) -> None:
    config = ReplayConfig(
        arms=("clones-agg",), lr_multiples=(1.0,), agg_min_row_users=min_row_users
    )
    (arm,) = _make_arms("clones-agg", _base(), None, config)
    service = Settings.model_fields["aggregation_min_row_users"].default
    assert arm.config.min_row_users == (min_row_users or service)
    arm.process(
        [("1", {"user=1": 1.0, "item=solo": 1.0}, 1)] * 5
        + [("2", {"user=2": 1.0, "item=a": 1.0}, 1)] * 5
    )
    assert arm.rounds == 1 and "item=a" in arm.base.index
    assert ("item=solo" in arm.base.index) is item_folded
    # A user's own row is private by name whatever min_row_users: it stays in the delta.
    assert "user=1" not in arm.base.index and "user=1" in arm.deltas["1"].index
    # What was folded left the delta at the rebase; what was withheld stays.
    assert ("item=solo" in arm.deltas["1"].index) is not item_folded


def test_tuning_reports_each_arm_s_scores_the_gate_s_regret_and_the_delta_s_size(
    synthetic_dir: Path,
) -> None:
    rows = tune(
        synthetic_dir, first=0.6, folds=1, grid={"gate_prior": (0.0, 4.0)}, arms=("clones-gated",)
    )
    assert [r["gate_prior"] for r in rows] == [0.0, 4.0]
    for row in rows:
        assert 0.5 < row["clones-gated auc"] < 1 and row["clones-gated bytes"] > 0
        assert math.isfinite(row["clones-gated regret"])
    # A prior toward the clone changes what is served, not what the clones learn.
    assert rows[0]["clones-gated auc"] != rows[1]["clones-gated auc"]
    assert rows[0]["clones-gated bytes"] == rows[1]["clones-gated bytes"]


# -- MovieLens ----------------------------------------------------------------------------


@pytest.mark.movielens
def test_movielens_clones_beat_the_frozen_base(movielens_dir: Path, tmp_path: Path) -> None:
    from fedlearn.data.movielens import convert_movielens

    convert_movielens(movielens_dir, tmp_path / "ml")
    config = ReplayConfig(
        arms=("frozen", "clones-agg"), lr_multiples=(1.0,), limit=40_000, l2_grid=()
    )
    result = replay(tmp_path / "ml", config)
    frozen, agg = result.arms
    assert result.n_live == 20_000
    assert agg.auc > frozen.auc + 0.05
    assert agg.gauc > frozen.gauc


# -- the replay runs the trainer's own core ------------------------------------------------


def test_a_clone_arm_predicts_and_learns_exactly_as_the_trainer_applies_a_batch() -> None:
    from fedlearn.model.table import DeltaTable
    from fedlearn.store.entries import Entry
    from fedlearn.trainer.apply import UserState, apply_batch

    base = _base()
    # lr_half_life stays a replay lever (the numpy reference): the trainer does not take it.
    settings = CloneSettings(lr=0.3, l2=0.01, bias_lr=0.2, shared_lr_scale=0.5)
    signals = ["click", "skip", "click", "click", "skip", "skip"]
    events = [
        {"event_id": f"{i}", "user": "u1" if i % 3 else "u2", "item": "ab"[i % 2], "signal": s}
        for i, s in enumerate(signals)
    ]
    entries = [Entry(f"{i + 1}-0", e) for i, e in enumerate(events)]
    catalog = {"a": {"genre=x": 1.0}, "b": {}}
    table = DeltaTable(3)
    applied = apply_batch(
        base, table, {u: UserState() for u in ("u1", "u2")}, entries, settings,
        item_features=catalog.get, prediction_features=lambda pid, item: None, applied_at=0.0,
    )  # fmt: skip
    arm = ClonesArm(base, settings=settings)
    features, labels = applied.log["features"], applied.labels.astype(int).tolist()
    labelled = [(e["user"], x, y) for e, x, y in zip(events, features, labels, strict=True)]
    served = arm.process(labelled)
    assert served.tolist() == applied.predictions.tolist()
    for user in ("u1", "u2"):
        assert arm.deltas[user].to_bytes() == table.to_bytes_many([user])[user]


def test_the_gated_arm_serves_the_gate_s_choice_before_each_event() -> None:
    base = _base()
    arm = GatedClonesArm(
        base,
        settings=CloneSettings(lr=0.5, l2=0.0, bias_lr=0.5),
        gating=GateSettings(eta=50, blend=False),
    )
    x = {"user=1": 1.0, "item=a": 1.0}
    served = arm.process([("1", x, 1)] * 6)
    clone, frozen = arm.clone_predictions[0], arm.base_predictions[0]
    assert served[0] == clone[0], "a new gate serves the clone (ties go to the clone)"
    assert served[-1] == clone[-1] != frozen[-1], "the clone learned the clicks: still served"


@pytest.mark.parametrize("blend", [False, True])
def test_the_gated_arm_serves_and_updates_gates_exactly_as_the_trainer(blend: bool) -> None:
    from fedlearn.model.table import DeltaTable
    from fedlearn.store.entries import Entry
    from fedlearn.trainer.apply import UserState, apply_batch

    base, settings = _base(), CloneSettings(lr=0.5, l2=0.0, bias_lr=0.5)
    gating = GateSettings(eta=3.0, blend=blend)
    signals = ["click", "click", "skip", "click", "skip", "click", "click", "skip"]
    events = [
        {"event_id": f"{i}", "user": f"u{i % 2}", "item": "ab"[i % 3 == 0], "signal": s}
        for i, s in enumerate(signals)
    ]
    applied = apply_batch(
        base, DeltaTable(3), {u: UserState() for u in ("u0", "u1")},
        [Entry(f"{i + 1}-0", e) for i, e in enumerate(events)], settings,
        item_features=lambda item: {}, prediction_features=lambda pid, item: None,
        applied_at=0.0, gating=gating,
    )  # fmt: skip
    arm = GatedClonesArm(base, settings=settings, gating=gating)
    labels = applied.labels.astype(int).tolist()
    labelled = [
        (e["user"], x, y) for e, x, y in zip(events, applied.log["features"], labels, strict=True)
    ]
    assert arm.process(labelled).tolist() == applied.served_predictions.tolist()
    assert {u: applied.users[u].gate for u in ("u0", "u1")} == arm.gates
    if blend:  # the mixture lies strictly between the two experts once the gate has evidence
        clone, frozen = arm.clone_predictions[0], arm.base_predictions[0]
        last = applied.served_predictions[-1]
        assert min(clone[-1], frozen[-1]) < last < max(clone[-1], frozen[-1])


def test_a_learned_start_gives_a_new_user_the_mean_of_the_last_round_s_own_rows() -> None:
    arm = AggregatedClonesArm(
        _base(), settings=CloneSettings(lr=0.5, l2=0.0, bias_lr=0.5), learned_start=True
    )
    arm.process([(u, {f"user={u}": 1.0, "item=a": 1.0}, 1) for u in ("1", "2")] * 3)

    def own_row(user: str) -> np.ndarray:
        bw, bv = arm.base.rows([f"user={user}"])
        dw, dv = arm.deltas[user].lookup([f"user={user}"])
        return np.concatenate([bw + dw, (bv + dv)[0]])

    mean = (own_row("1") + own_row("2")) / 2  # private rows: the round left them as they were
    assert arm.start_row is not None and not np.allclose(mean[1:], 0)
    arm._start_new_users(Counter({"3": 1}))
    np.testing.assert_allclose(own_row("3"), mean, atol=1e-6)  # float32 storage


# -- the update's levers ----------------------------------------------------------------


def test_item_rows_step_by_the_shared_multiple_and_the_user_row_by_the_full_step() -> None:
    base = _base()
    x = {"user=1": 1.0, "item=a": 1.0}
    full, half = Delta(3), Delta(3)
    for delta, scale in ((full, 1.0), (half, 0.5)):
        arm = ClonesArm(base, settings=CloneSettings(0.1, 0.0, 0.1, shared_lr_scale=scale))
        arm.deltas["1"] = delta
        arm.learn([("1", x, 1)])
    w_full, w_half = full.lookup(["user=1", "item=a"])[0], half.lookup(["user=1", "item=a"])[0]
    assert w_half[0] == pytest.approx(w_full[0]) and w_full[0] > 0
    assert w_half[1] == pytest.approx(0.5 * w_full[1]) and w_full[1] > 0
    assert half.w0 == pytest.approx(full.w0)


def test_the_step_decays_with_the_user_s_event_count() -> None:
    base = _base()
    x = {"user=1": 1.0, "item=a": 1.0}

    def intercept_steps(half_life: float | None) -> list[float]:
        arm = ClonesArm(base, settings=CloneSettings(0.1, 0.0, 0.1, lr_half_life=half_life))
        steps = []
        for _ in range(3):  # one event per block: the count carries over in the delta
            before = arm.deltas["1"].w0 if "1" in arm.deltas else 0.0
            p = arm.process([("1", x, 1)])[0]
            steps.append((arm.deltas["1"].w0 - before) / (1 - p))
        return steps

    assert intercept_steps(None) == pytest.approx([0.1, 0.1, 0.1])
    assert intercept_steps(2.0) == pytest.approx([0.1, 0.1 * 2 / 3, 0.1 * 2 / 4])


# -- more than averages ------------------------------------------------------------------


def _live(users: list[int], y: list[int]) -> LiveEvents:
    users_a = np.asarray(users)
    position = np.zeros(len(users), dtype=np.int64)
    for u in set(users):
        position[users_a == u] = np.arange((users_a == u).sum())
    return LiveEvents(users_a, np.asarray(y, dtype=np.float64), position, first_n=2)


def test_bootstrap_intervals_hold_the_point_difference_and_vanish_between_equal_arms() -> None:
    rng = np.random.default_rng(3)
    users = rng.integers(0, 40, 2000).tolist()
    y = (rng.random(2000) < 0.5).astype(int).tolist()
    live = _live(users, y)
    good = np.clip(0.5 + 0.3 * (np.asarray(y) - 0.5) + rng.normal(0, 0.2, 2000), 0.01, 0.99)
    noise = rng.random(2000)
    diffs = paired_bootstrap(live, {"a": good, "b": noise, "c": good}, "a", resamples=50)
    by = {(d.against, d.metric): d for d in diffs}
    assert set(by) == {(o, m) for o in ("b", "c") for m in METRICS}
    for metric in METRICS:
        d = by[("b", metric)]
        assert d.low <= d.diff <= d.high
        assert (d.low > 0) if metric != "log_loss" else (d.high < 0), metric
        same = by[("c", metric)]
        assert same.diff == same.low == same.high == 0.0
    assert by[("b", "auc")].diff == pytest.approx(roc_auc(y, good) - roc_auc(y, noise))


def test_a_weighted_auc_counts_an_event_as_often_as_its_weight() -> None:
    from fedlearn.evaluate.compare import _RankedScores

    y = np.array([1, 0, 1, 0, 1, 0], dtype=np.float64)
    p = np.array([0.9, 0.8, 0.8, 0.3, 0.2, 0.1])
    weight = np.array([2, 1, 0, 3, 1, 1], dtype=np.float64)
    repeated = np.repeat(np.arange(6), weight.astype(int))
    assert _RankedScores(y, p).auc(weight) == pytest.approx(roc_auc(y[repeated], p[repeated]))


def test_share_of_users_worse_counts_only_users_with_enough_events() -> None:
    live = _live([0] * 10 + [1] * 10 + [2] * 3, [1, 0] * 5 + [1, 0] * 5 + [1, 1, 1])
    right = np.where(live.y == 1, 0.8, 0.2)
    # User 0 is predicted worse than the reference, user 1 better, user 2 (3 events) ignored.
    p = np.where(live.users == 0, 1 - right, right)
    reference = np.full(len(live.y), 0.5)
    assert share_worse(live, p, reference, min_events=10) == 0.5
    assert math.isnan(share_worse(live, p, reference, min_events=11))


def test_replay_plot_writes_a_self_contained_page(synthetic_dir: Path, tmp_path: Path) -> None:
    page = tmp_path / "auc.html"
    result = CliRunner().invoke(
        main,
        ["replay", str(synthetic_dir), "--arms", "frozen,global", "--plot", str(page), "--json"],
    )
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert html.startswith("<!doctype html>") and html.count("<polyline") == 2
    assert "<script" not in html and "http" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    curves = json.loads(result.stdout)["curves"]
    assert list(curves) == ["frozen", "global"]
    assert curves["global"][-1][0] == 1600  # the last point holds every live event


def test_plot_refuses_curves_without_any_auc() -> None:
    with pytest.raises(ValueError, match="no finite AUC to plot"):
        progressive_auc_svg({"a": [(1, math.nan)]}, title="t")


def test_a_plot_path_that_cannot_be_written_is_refused(synthetic_dir: Path, tmp_path: Path):
    target = tmp_path / "missing-dir" / "auc.html"
    result = CliRunner().invoke(
        main, ["replay", str(synthetic_dir), "--arms", "frozen", "--plot", str(target)]
    )
    assert result.exit_code == 1
    assert f"cannot write the plot to {target}" in result.output


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("shared_lr_scale", 0.0, "shared_lr_scale must be in (0, 1], got 0.0"),
        ("lr_half_life", -1.0, "lr_half_life must be positive, got -1.0"),
        ("bootstrap", -1, "bootstrap must be zero (none) or positive, got -1"),
        ("curve_points", 0, "curve_points must be at least 1, got 0"),
        ("agg_min_row_users", 0, "agg_min_row_users must be at least 1, got 0"),
    ],
)
def test_bad_lever_and_report_settings_are_refused(field: str, value: float, message: str):
    with pytest.raises(ValueError, match=re.escape(message)):
        ReplayConfig(**{field: value})


def test_a_blending_gate_serves_the_hedge_mixture_of_clone_and_base() -> None:
    settings = CloneSettings(lr=0.5, l2=0.0, bias_lr=0.5)
    gating = GateSettings(eta=1.0, blend=True)
    arm = GatedClonesArm(_base(), settings=settings, gating=gating)
    x = {"user=1": 1.0, "item=a": 1.0}
    served = arm.process([("1", x, 1), ("1", x, 0), ("1", x, 1)])
    clone, frozen = arm.clone_predictions[0], arm.base_predictions[0]
    assert served[0] == pytest.approx(0.5 * clone[0] + 0.5 * frozen[0])  # no evidence yet
    assert min(clone[2], frozen[2]) < served[2] < max(clone[2], frozen[2])
