"""The capacity model's arithmetic (``benchmarks/scale_plan.py``) on figures we choose, and
``bench_scale.py --quick`` run as a process against real Redis, API, trainer and Celery
workers: every table is printed, with numbers (no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from scale_plan import FITTED, PER_USER, at, fit_lines, plan_tables  # noqa: E402

UNITS = {
    "api_cpu_us_per_event": 100.0,
    "trainer_cpu_us_per_event": 30.0,
    "redis_ingest_cpu_us_per_event": 20.0,
    "redis_apply_cpu_us_per_event": 10.0,
    "dedupe_bytes_per_event": 64.0,
    "body_bytes_per_event": 150.0,
    "net_in_bytes_per_event": 200.0,
    "net_apply_bytes_per_event": 600.0,
    "delta_redis_bytes_per_user": 3000.0,
    "delta_blob_bytes_per_user": 2000.0,
}


def rows(noise: float = 0.0) -> list[dict[str, float]]:
    out = []
    for i, users in enumerate((100_000, 300_000, 1_000_000)):
        row = {"users": users} | {name: 3.0 + 2e-4 * users for name in FITTED}
        row["map_py_cpu_s"] += noise * (-1) ** i
        out.append(row | {name: 1000.0 for name in PER_USER})
    return out


def test_the_fit_recovers_a_line_and_reports_how_far_points_are() -> None:
    exact = fit_lines(rows())
    assert exact["promote_py_cpu_s"]["a"] == pytest.approx(3.0)
    assert exact["promote_py_cpu_s"]["b"] == pytest.approx(2e-4)
    assert at(exact, "promote_py_cpu_s", 4e6) == pytest.approx(803.0)
    assert exact["map_py_cpu_s"]["worst_residual"] < 1e-9
    assert fit_lines(rows(noise=20.0))["map_py_cpu_s"]["worst_residual"] > 0.05


def test_the_plan_is_the_unit_costs_times_the_peak_rate() -> None:
    text = plan_tables(UNITS, fit_lines(rows()), rows())
    # 10M users x 50 events / 86,400 s x 10 = 57,870 events/s; x 100 us = 5.8 cores
    assert "peak x10 = 57,870 events/s" in text
    assert "| API (gunicorn workers) | 5.8 cores | 100 us CPU per event | 10 cores |" in text
    assert "| trainers | 1.7 cores | 30 us per event | 3 trainer processes" in text
    # a round of 4,166,660 users: promote alone 3 + 2e-4 x 4,166,660 = 836 s
    assert "promote 836 s" in text
    # 10M x 5,000 B of deltas and snapshots = 46.6 GiB; notes 10M x 7 days x 1,000 B = 65 GiB
    assert "deltas and snapshots 47, rebase notes (7 days) 65," in text


@pytest.mark.timeout(600)
def test_bench_scale_quick_prints_every_table(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_scale.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(out.read_bytes())
    assert result["units"]["events"] > 0 and result["units"]["api_cpu_us_per_event"] > 0
    assert result["units"]["status"] == {"202": 400}
    assert [r["users"] for r in result["rounds"]] == [2000, 5000]
    assert all(r["shadow_scored"] and r["promote_shards"] == 8 for r in result["rounds"])
    for heading in ("| users | items |", "Fitted (y = a + b * users", "| API (gunicorn"):
        assert heading in done.stdout
