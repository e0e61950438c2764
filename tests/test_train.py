"""``fedlearn train-base``: the model file it writes, what its header records, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedlearn.cli import main
from fedlearn.data.synthetic import SyntheticConfig, write_synthetic
from fedlearn.model import Base, Clone


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "syn"
    write_synthetic(out, SyntheticConfig(n_users=60, n_items=40, events_per_user=30, seed=2))
    return out


def _train(data_dir: Path, out: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["train-base", str(data_dir), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_writes_a_base_with_its_data_range_metrics_and_hyperparameters(
    data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model.flfm"
    text = _train(data_dir, out, "--factors", "6", "--epochs", "4", "--version", "m1")
    base = Base.load(out)
    assert base.version == "m1" and base.n_factors == 6
    assert "genre=g0" in base.index and "item=i0" in base.index
    data = base.meta["data"]
    assert data["events"] == data["of_events"] == 1800
    assert data["first_ts"] <= data["last_ts"]
    assert 0.0 < base.meta["metrics"]["valid_auc"] <= 1.0
    assert [t["l2"] for t in base.meta["l2_grid"]] == [1e-5, 1e-4, 1e-3]
    chosen = min(base.meta["l2_grid"], key=lambda t: t["valid_log_loss"])["l2"]
    assert base.hyper["l2_w"] == base.hyper["l2_v"] == chosen
    assert base.hyper["n_factors"] == 6 and 1 <= base.hyper["epochs_chosen"] <= 4
    assert text.startswith(f"wrote {out}: ")
    assert "chosen from 1e-05, 0.0001, 0.001" in text
    # It is a usable model: it scores an event.
    assert 0 < Clone(base).predict_proba_one({"user=u1": 1.0, "item=i3": 1.0}) < 1


def test_until_fraction_trains_on_the_first_part_only(data_dir: Path, tmp_path: Path) -> None:
    full, half = tmp_path / "full.flfm", tmp_path / "half.flfm"
    _train(data_dir, full, "--l2", "1e-4", "--epochs", "2")
    _train(data_dir, half, "--l2", "1e-4", "--epochs", "2", "--until-fraction", "0.5")
    full_meta, half_meta = Base.load(full).meta["data"], Base.load(half).meta["data"]
    assert half_meta["events"] == 900 and half_meta["until_fraction"] == 0.5
    assert half_meta["last_ts"] < full_meta["last_ts"]
    assert Base.load(half).meta["l2_grid"] == []  # a fixed --l2 skips the search


def test_same_seed_same_model(data_dir: Path, tmp_path: Path) -> None:
    args = ("--l2", "1e-4", "--epochs", "2", "--version", "x", "--seed", "3")
    _train(data_dir, tmp_path / "a.flfm", *args)
    _train(data_dir, tmp_path / "b.flfm", *args)
    a, b = Base.load(tmp_path / "a.flfm"), Base.load(tmp_path / "b.flfm")
    assert a.features == b.features
    np.testing.assert_array_equal(a.v, b.v)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--valid-fraction", "0"], 2, "--l2-grid needs a validation tail"),
        (["--l2-grid", "1e-4,abc"], 2, "'abc' is not a number"),
        (["--factors", "0"], 2, "--factors"),
        (["--until-fraction", "0"], 2, "--until-fraction"),
    ],
)
def test_bad_options_are_refused_before_anything_is_read(
    data_dir: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    out = tmp_path / "model.flfm"
    result = CliRunner().invoke(main, ["train-base", str(data_dir), "--out", str(out), *args])
    assert result.exit_code == code
    assert message in result.output
    assert not out.exists()


def test_out_must_not_be_a_folder(data_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train-base", str(data_dir), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "is a folder" in result.output or "is a directory" in result.output


def test_missing_dataset_folder(tmp_path: Path) -> None:
    out = tmp_path / "model.flfm"
    result = CliRunner().invoke(main, ["train-base", str(tmp_path / "nope"), "--out", str(out)])
    assert result.exit_code == 1
    assert "nope: no such folder" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
