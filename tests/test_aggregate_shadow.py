"""Shadow evaluation before promotion: a poisoned round is rejected, an honest one promoted.

The world is the attack test's (tests/test_aggregate_attack.py): a base, honest clones, 36
attackers, and held-out later events. Those events are written as the trainers' event log
(records with the features the event was trained on), which is where the shadow check reads
the recent events. The rounds run through the real reducer on a real redis-server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.monthly import retrain_from_eventlog
from fedlearn.aggregate.run import run_round_inline
from fedlearn.aggregate.shadow import holdout, shadow_check
from fedlearn.aggregate.synthetic import publish, write_deltas
from fedlearn.data.eventlog import append_lines, shard_dir
from fedlearn.store import Store
from fedlearn.telemetry.dashboard import round_row
from tests.test_aggregate_attack import world  # noqa: F401  (the shared fixture)


def write_log(folder: Path, world: dict[str, Any]) -> Path:  # noqa: F811
    """The held-out events as one shard's event log, in time order."""
    lines = [
        orjson.dumps({"user": f"u{i % 50}", "features": x, "signal": "click" if y else "skip",
                      "ts": 1_000.0 + i, "log_id": f"{i}-0"}) + b"\n"
        for i, (x, y) in enumerate(zip(world["x"], world["y"], strict=True))
    ]  # fmt: skip
    append_lines(shard_dir(folder, 0), {"1970-01-01": lines})
    return folder


def run(store: Store, world: dict[str, Any], users: dict, config: AggregationConfig) -> dict:  # noqa: F811
    store.client.flushall()
    publish(store, world["base"])
    write_deltas(store, users, base="1")
    return run_round_inline(store, config)


@pytest.fixture
def config(world: dict[str, Any], tmp_path: Path) -> AggregationConfig:  # noqa: F811
    """Plain FedAvg without clipping (the rule the attack poisons), shadow-checked on the log."""
    return AggregationConfig(
        clip_norm=None, min_users=1, monthly_eventlog_dir=str(write_log(tmp_path, world))
    )


def test_a_poisoned_round_is_rejected_and_the_base_stays(
    store: Store,
    world: dict[str, Any],  # noqa: F811
    config: AggregationConfig,
) -> None:
    record = run(store, world, {**world["honest"], **world["attackers"]}, config)
    assert record["status"] == "rejected", record
    shadow = record["result"]["shadow"]
    assert shadow["scored"] and not shadow["promote"]
    assert shadow["candidate"]["log_loss"] > shadow["current"]["log_loss"] + config.shadow_margin
    assert "log loss" in record["error"] and "stays current" in record["error"]
    assert store.bases.current_version() == "1"
    assert [info.version for info in store.bases.history()] == ["1"]


def test_an_honest_round_is_promoted_with_both_figures(
    store: Store,
    world: dict[str, Any],  # noqa: F811
    config: AggregationConfig,
) -> None:
    record = run(store, world, world["honest"], config)
    assert record["status"] == "done", record
    shadow = record["result"]["shadow"]
    assert shadow["promote"] and shadow["events"] == len(world["y"])
    assert shadow["candidate"]["version"] == record["result"]["version"]
    assert shadow["current"]["version"] == "1"
    assert store.bases.current_version() == record["result"]["version"]
    # the dashboard's round row carries both figures
    note = round_row(record).shadow
    assert note == (f"shadow: log loss {shadow['candidate']['log_loss']} (current "
                    f"{shadow['current']['log_loss']}) on {len(world['y'])} events")  # fmt: skip


def test_no_event_log_means_not_scored_but_said(world: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    verdict = shadow_check(world["base"], world["base"], holdout(tmp_path / "none", 100), 0.01)
    assert verdict.promote and verdict.figures["scored"] is False
    assert "no recent events" in verdict.reason


def test_holdout_takes_the_most_recent_events(world: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    events = holdout(write_log(tmp_path, world), 10)
    assert events.labels == [int(y) for y in world["y"][-10:]]


def test_monthly_retrain_is_checked_on_its_held_out_tail(
    store: Store,
    world: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    publish(store, world["base"])
    folder = write_log(tmp_path, world)
    summary = retrain_from_eventlog(store, folder, shadow_events=200, shadow_margin=0.05)
    shadow = summary["shadow"]
    assert shadow["events"] == 200 and shadow["scored"] and shadow["promote"], shadow
    assert summary["n_events"] == len(world["y"]) - 200  # the tail was held out of training
    assert store.bases.current_version() == summary["version"]


def test_a_monthly_candidate_worse_than_the_current_base_is_not_published(
    store: Store,
    world: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    # a log whose labels were inverted up to its last 100 events (a broken export, say):
    # the candidate learns the opposite of what users do and the honest tail shows it
    publish(store, world["base"])
    y = np.concatenate([1 - world["y"][:-100], world["y"][-100:]])
    folder = write_log(tmp_path, {"x": world["x"], "y": y})
    summary = retrain_from_eventlog(store, folder, shadow_events=100, shadow_margin=0.05)
    assert "rejected" in summary, summary["shadow"]
    assert summary["shadow"]["worse_by"] > 0
    assert store.bases.current_version() == "1"
    assert [info.version for info in store.bases.history()] == ["1"]


def test_holdout_reads_only_the_newest_day_files_that_hold_enough(
    world: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = write_log(tmp_path, world)
    # an older day file that does not even decode: read, it would raise
    append_lines(shard_dir(folder, 0), {"1969-12-31": [b"{not json\n"]})
    assert len(holdout(folder, 100)) == 100
    with pytest.raises(orjson.JSONDecodeError):
        holdout(folder, len(world["y"]) + 1)
