"""``fedlearn aggregate --inline`` and ``fedlearn base list | rollback | retrain`` against a real
Redis (the Celery-backed ``aggregate`` is tested beside the workers, in test_aggregate_celery)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from fedlearn.aggregate.synthetic import publish, random_deltas, write_deltas
from fedlearn.cli.aggregate import aggregate
from fedlearn.cli.base import base as base_group
from fedlearn.model import Base
from fedlearn.store import Store


def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "FEDLEARN_N_SHARDS": "4", "FEDLEARN_DATA_DIR": str(tmp_path)}


def test_aggregate_inline_then_list_and_roll_back(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    first = Base.fresh(["item=1"], 3, version="1")
    publish(store, first, {"kind": "demo"})
    write_deltas(store, random_deltas(np.random.default_rng(0), 10, n_factors=3), base="1")
    runner = CliRunner()
    result = runner.invoke(aggregate, ["--inline"], env=env(redis_url, tmp_path))
    assert result.exit_code == 0, result.output
    assert "base 2 published on 1 from 10 users" in result.output
    assert store.bases.current_version() == "2"

    listing = runner.invoke(base_group, ["list"], env=env(redis_url, tmp_path))
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert lines[1].startswith("  1 ") and "demo" in lines[1]
    assert lines[2].startswith("* 2 ") and "round r" in lines[2] and "fedavg" in lines[2]

    back = runner.invoke(base_group, ["rollback", "1"], env=env(redis_url, tmp_path))
    assert back.exit_code == 0 and "2 -> 1" in back.output
    assert store.bases.current_version() == "1"
    missing = runner.invoke(base_group, ["rollback", "7"], env=env(redis_url, tmp_path))
    assert missing.exit_code == 1 and "'7' does not exist" in missing.output


def test_aggregate_explains_what_it_could_not_do(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        aggregate, ["--inline", "--strategy", "krum"], env=env(redis_url, tmp_path)
    )
    assert result.exit_code == 2 and "'krum'" in result.output
    publish(store, Base.fresh(["a"], 2, version="1"))
    result = runner.invoke(aggregate, ["--inline"], env=env(redis_url, tmp_path))
    assert result.exit_code == 0 and "skipped: 0 user(s) contributed" in result.output
    result = runner.invoke(
        base_group, ["retrain", "--from-eventlog", str(tmp_path / "none")],
        env=env(redis_url, tmp_path),
    )  # fmt: skip
    assert result.exit_code == 1 and "does not exist" in result.output
