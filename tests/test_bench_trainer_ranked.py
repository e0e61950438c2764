"""``bench_trainer.py --ranked``: the prefilled rankings are the rank route's records, and the
trainer finds them (a benchmark of the ranked path must run the ranked path)."""

from __future__ import annotations

import sys
from pathlib import Path

from fedlearn.data.eventlog import read_log
from fedlearn.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_trainer


def test_ranked_events_train_on_their_records_and_log_how_they_were_shown(
    store: Store, tmp_path: Path
) -> None:
    n = 2000
    bench_trainer.prefill(store, n, ranked=0.7)
    result = bench_trainer.drain(store, n, batch=500, eventlog=tmp_path / "log")
    assert result["events"] == n
    lines = list(read_log(tmp_path / "log"))
    assert len(lines) == n
    ranked = [line for line in lines if "prediction_id" in line]
    assert 0.6 < len(ranked) / n < 0.8
    assert all(line["features_from"] == "prediction" for line in ranked)
    assert all(line["features_from"] == "event" for line in lines if "prediction_id" not in line)
    assert all({"slot", "propensity", "policy"} <= line.keys() for line in ranked)
    assert all(("candidates" in line) == (line["slot"] == 0) for line in ranked)
