"""``fedlearn bench --quick``: the whole benchmark suite with tiny sizes, as a process. Every
figure of the table must be there and be a number (no speed is asserted: the sizes are too
small to mean anything, and the machine is shared)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.timeout(240)

# The first words of every row the suite prints, in order; rounds add one row per size.
FIGURES = (
    "online update, events/s",
    "trainer end to end",
    "trainer without its event log",
    "trainer: events per trainer CPU-second",
    "1 `fedlearn worker` process",
    "2 `fedlearn worker` process",
    "compiled update's cold start",
    "HTTP ingest, events/s",
    "HTTP ingest p99",
    "model fetch p50",
    "model fetch p99",
    "freshness p50",
    "freshness p99",
    "aggregation round, s",
    "bytes per user in Redis",
    "ceiling: redis-py pipelined XADD",
    "ceiling: XREADGROUP",
)
NUMBER = re.compile(r"^[\d,]+(\.\d+)?\b")


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    # The command as the CLI runs it (bench(): click parses sys.argv[1:]).
    code = "from fedlearn.cli.bench import bench; bench(prog_name='fedlearn bench')"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )


def table_rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_quick_suite_prints_every_figure(tmp_path: Path) -> None:
    raw_file = tmp_path / "bench.json"
    done = run_bench("--quick", "--json", str(raw_file))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = table_rows(done.stdout)
    figures = [row[0] for row in rows]
    assert len(figures) == len(FIGURES), figures
    for expected, figure in zip(FIGURES, figures, strict=True):
        assert figure.startswith(expected), (expected, figure)
    for figure, ours, reference, *_ in rows:
        # Our figure is a number, except on the ceiling rows, whose figure is the reference.
        value = reference if figure.startswith("ceiling:") else ours
        assert NUMBER.match(value), (figure, value)
    assert "machine: " in done.stdout and "cores" in done.stdout
    raw = orjson.loads(raw_file.read_bytes())
    assert raw["errors"] == {}
    http = raw["raw"]["http"]
    # The load was served: every ingest request accepted its 50 events, every fetch answered.
    assert set(http["ingest"]["statuses"]) == {"202"}
    assert http["ingest"]["accepted"] == 50 * http["ingest"]["requests"] > 0
    assert set(http["fetch"]["statuses"]) == {"200"}
    assert http["freshness"]["probes"] > 0 and http["freshness"]["timeouts"] == 0
    assert raw["raw"]["trainer"]["events"] >= raw["raw"]["sizes"]["trainer_events"]


def test_only_runs_the_chosen_sections(tmp_path: Path) -> None:
    done = run_bench("--quick", "--only", "trainer", "--trainer-events", "500")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = [row[0] for row in table_rows(done.stdout)]
    assert [f.split(" ")[0] for f in figures] == [
        "trainer", "trainer", "trainer:", "1", "2", "compiled", "bytes",
    ]  # fmt: skip


def test_a_bad_size_is_refused_before_anything_runs() -> None:
    done = run_bench("--round-users", "10,abc")
    assert done.returncode == 2
    assert "--round-users" in done.stderr and "'10,abc'" in done.stderr
