"""The offline replay: every arm on a synthetic log in seconds, its JSON and table, its errors,
the aggregation round, and (when the data is there) MovieLens."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedlearn.cli import main
from fedlearn.data.synthetic import SyntheticConfig, write_synthetic
from fedlearn.evaluate.arms import AggregatedClonesArm
from fedlearn.evaluate.replay import ALL_ARMS, ReplayConfig, replay
from fedlearn.model import Base, Clone


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
    rows = lines[5 : lines.index("", 5)]  # then the drift events the detectors would raise
    assert [line.split()[0] for line in rows] == ["frozen", "clones", "clones"]
    assert "x3" in rows[-1]
    assert any(line.startswith("drift: ") for line in lines[5:])


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
    arm = AggregatedClonesArm(base, lr=0.5, bias_lr=0.5)
    x = {"user=1": 1.0, "item=hit": 1.0}
    arm.process([("1", x, 1)] * 5 + [("2", {"user=2": 1.0, "item=hit": 1.0}, 1)] * 5)
    assert arm.rounds == 1 and "item=hit" in arm.base.index
    newcomer = {"user=3": 1.0, "item=hit": 1.0}
    assert Clone(arm.base).predict_proba_one(newcomer) > Clone(base).predict_proba_one(newcomer)


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
