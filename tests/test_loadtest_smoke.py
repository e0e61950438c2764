"""The locust load test, run for a few seconds against a live service: the real API (werkzeug in
a thread), the session's real redis-server, a real Trainer thread. It must pass its own
failure criteria (exit code 0), and no event may be lost: the events the API accepted (the
locustfile's tally of 202 answers, and the API's own counter) are exactly the events applied
to the users' deltas once the trainer has drained the streams. No speed is asserted."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from fedlearn.api import create_app, issue_token
from fedlearn.api.server import ThreadedServer
from fedlearn.config import Settings, load_settings
from fedlearn.model import Base
from fedlearn.store import Store
from fedlearn.store.items import Catalog
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.trainer import Trainer, TrainerConfig

pytestmark = pytest.mark.timeout(120)

LOADTESTS = Path(__file__).resolve().parents[1] / "loadtests"
LOCUSTFILE = LOADTESTS / "locustfile.py"
SECRET = "loadtest-smoke-secret-0123456789"
N_SHARDS = 4
N_ITEMS = 30


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        redis_url=redis_url, secret_key=SECRET, n_shards=N_SHARDS, data_dir=tmp_path / "data"
    )


@pytest.fixture
def service(settings: Settings) -> Iterator[tuple[str, Store]]:
    """The API on a free port and one trainer, over a small published base and catalog."""
    assert settings.redis_url is not None
    store = Store.from_url(settings.redis_url, N_SHARDS)
    genres = [f"genre=g{g}" for g in range(3)]
    base = Base.fresh([f"item=i{i}" for i in range(N_ITEMS)] + genres, 4, version="smoke-1")
    store.bases.put_base(base.version, base.to_bytes(), {"generation": 0})
    store.bases.set_current(base.version)
    Catalog(store.client).put_items(
        {f"i{i}": {"title": f"film {i}", "features": {genres[i % 3]: 1.0}} for i in range(N_ITEMS)}
    )
    trainer = Trainer(
        store,
        lambda b: CloneSettings(**settings.clone_hyper(b.hyper)),
        TrainerConfig(name="smoke", batch_size=200),
    )
    stop = threading.Event()
    thread = threading.Thread(target=trainer.run, args=(stop,), name="trainer", daemon=True)
    with ThreadedServer(create_app(settings, store)) as server:
        thread.start()
        try:
            yield server.url, store
        finally:
            stop.set()
            thread.join(30)
    store.close()


def run_locust(url: str, token: str, summary: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", "6", "-r", "6", "-t", "6s", "--stop-timeout", "15", "-H", url,
        "--summary-file", str(summary), "--population", "40", "--think", "0.2",
        "--pause", "0.2", "--probe-every", "0.5", "--aggregate-every", "0",
        "--max-p99-ms", "30000", "--only-summary", *extra,
    ]  # fmt: skip
    env = {**os.environ, "FEDLEARN_ADMIN_TOKEN": token}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90, check=False)


def applied_events(store: Store, users: list[str]) -> int:
    """Events applied to these users' deltas, as the trainer recorded them in Redis."""
    total = 0
    for user in users:
        record = store.deltas.get(store.shard_of(user), user)
        total += record.events if record is not None else 0
    return total


def wait_applied(store: Store, users: list[str], expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while (applied := applied_events(store, users)) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return applied


def api_counter(url: str, name: str) -> float:
    text = urllib3.request("GET", f"{url}/metrics", timeout=10).data.decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_sessions_pass_the_criteria_and_lose_no_event(
    service: tuple[str, Store], settings: Settings, tmp_path: Path
) -> None:
    url, store = service
    token = issue_token(settings, admin=True).token
    summary_file = tmp_path / "summary.json"
    done = run_locust(url, token, summary_file)
    assert done.returncode == 0, done.stderr[-4000:]
    summary: dict[str, Any] = orjson.loads(summary_file.read_bytes())
    assert summary["problems"] == []
    assert summary["failures"] == 0 and summary["requests"] > 20
    accepted = summary["events_accepted"]
    assert accepted > 0 and summary["events_duplicates"] == 0
    assert accepted == summary["events_sent"]
    # The API counted what the clients counted, and the trainer applied every one of them.
    assert api_counter(url, "fedlearn_events_accepted_total") == accepted
    assert wait_applied(store, summary["users"], accepted) == accepted
    # Zipf: users came back, and their events landed in fewer users than sessions.
    assert 1 < len(summary["users"]) <= 41
    fresh = summary["freshness"]
    assert fresh["samples"] >= 1 and fresh["timeouts"] == 0
    assert 0 < fresh["p50_ms"] <= fresh["p99_ms"]


def test_broken_criteria_make_locust_exit_non_zero(
    service: tuple[str, Store], settings: Settings, tmp_path: Path
) -> None:
    """A bad admin token: every token mint is refused (401), so the failure ratio is 1."""
    url, _store = service
    summary_file = tmp_path / "summary.json"
    done = run_locust(url, "not-a-token", summary_file, "-t", "2s")
    assert done.returncode == 1, done.stderr[-4000:]
    summary = orjson.loads(summary_file.read_bytes())
    assert summary["failures"] > 0 and summary["events_accepted"] == 0
    assert any("failure ratio" in problem for problem in summary["problems"])


def test_run_script_checks_a_running_service(
    service: tuple[str, Store], settings: Settings, tmp_path: Path
) -> None:
    """``run.py --host``: one short stage, its reports, and accepted == applied in Redis."""
    url, _store = service
    out = tmp_path / "reports"
    argv = [
        sys.executable, str(LOADTESTS / "run.py"), "--host", url, "--redis-url",
        str(settings.redis_url), "--users", "4", "--spawn-rate", "4", "--run-time", "4s",
        "--out", str(out), "--", "--population", "30", "--think", "0.2", "--pause", "0.2",
        "--probe-every", "0.5", "--max-p99-ms", "30000",
    ]  # fmt: skip
    env = {**os.environ, "FEDLEARN_ADMIN_TOKEN": issue_token(settings, admin=True).token}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = orjson.loads((out / "result.json").read_bytes())
    (stage,) = result["stages"]
    assert stage["ok"] and stage["lost"] == 0
    assert stage["accepted"] == stage["applied"] > 0
    for name in ("u4_report.html", "u4_stats.csv", "u4_summary.json"):
        assert (out / name).is_file(), name
    assert "| 4 |" in done.stdout


def test_zipf_population_and_mix() -> None:
    sys.path.insert(0, str(LOADTESTS))
    try:
        from workload import Population, parse_mix, percentile
    finally:
        sys.path.remove(str(LOADTESTS))
    population = Population(1000, 1.1, "p")
    assert 0.3 < population.share_of_top(0.01) < 0.6  # a few users make much of the traffic
    rng = random.Random(0)
    draws = [population.draw(rng) for _ in range(5000)]
    assert draws.count("p-u1") > 10 * max(1, draws.count("p-u100"))
    assert parse_mix("session=3, burst=1") == {"session": 3, "reload": 0, "burst": 1}
    with pytest.raises(ValueError, match="'sesion=3'"):
        parse_mix("sesion=3")
    with pytest.raises(ValueError, match="weight 0"):
        parse_mix("session=0")
    with pytest.raises(ValueError, match="--zipf"):
        Population(10, float("nan"), "p")
    assert percentile([], 0.5) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


def run_script(url: str, settings: Settings, out: Path, *args: str) -> subprocess.CompletedProcess:
    """``loadtests/run.py --host`` against the test's service, with a small, quick population."""
    argv = [
        sys.executable, str(LOADTESTS / "run.py"), "--host", url, "--redis-url",
        str(settings.redis_url), "--out", str(out), *args, "--", "--population", "30",
        "--probe-every", "0.5", "--max-p99-ms", "30000",
    ]  # fmt: skip
    env = {**os.environ, "FEDLEARN_ADMIN_TOKEN": issue_token(settings, admin=True).token}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=110, check=False)


def test_fractions_ramp_to_a_bounded_saturation_then_hold_a_constant_rate(
    service: tuple[str, Store], settings: Settings, tmp_path: Path
) -> None:
    """``--fractions``: a ramp of paced stages (10 then 20 requests/s, stopped by --ramp-max),
    then a stage at half the rate found; every stage loses nothing. No speed is asserted: only
    that the offered rates are the ones asked for and the load stays within them."""
    url, _store = service
    out = tmp_path / "reports"
    done = run_script(
        url, settings, out, "--fractions", "0.5", "--ramp-from", "10", "--ramp-factor", "2",
        "--ramp-max", "20", "--ramp-time", "3s", "--run-time", "3s",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = orjson.loads((out / "result.json").read_bytes())
    ramp = result["saturation"]["ramp"]
    assert [r["offered_rps"] for r in ramp] == [10.0, 20.0]
    assert "--ramp-max 20" in result["saturation"]["why"]  # followed to the top: bounded
    saturation = result["saturation"]["rate"]
    assert saturation == ramp[-1]["achieved_rps"]
    (stage,) = result["stages"]
    assert stage["fraction"] == 0.5 and stage["offered_rps"] == round(saturation / 2, 1)
    for row in [*ramp, stage]:
        assert row["lost"] == 0 and row["accepted"] == row["applied"] > 0
        summary = orjson.loads((out / f"{row['stage']}_summary.json").read_bytes())
        # The pacer hands out one slot per 1/rate seconds: never more requests than that.
        assert summary["paced_requests"] <= row["offered_rps"] * summary["paced_seconds"] + 2
        fresh = summary["freshness"]
        assert fresh["samples"] >= 1
        assert 0 <= fresh["low_p50_ms"] <= fresh["p50_ms"]  # visible between the two bounds
    assert "saturation rate:" in done.stdout


def test_a_ramp_whose_first_stage_breaks_the_criteria_says_where_to_start(
    service: tuple[str, Store], settings: Settings, tmp_path: Path
) -> None:
    url, _store = service
    done = run_script(
        url, settings, tmp_path / "reports", "--fractions", "0.5", "--ramp-from", "10",
        "--ramp-max", "10", "--ramp-time", "2s", "--max-p99-ms", "0.001",
    )  # fmt: skip
    assert done.returncode == 1
    assert "start lower with --ramp-from" in done.stderr
    assert "HTTP p99" in done.stderr  # which criterion broke, with its value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fractions", "0,0.5"], "--fractions must be numbers in (0, 1.5]"),
        (["--rate", "fast"], "--rate must be numbers"),
        (["--saturation", "800"], "--saturation goes with --fractions"),
        (["--rate", "10", "--users", "5"], "not allowed with argument"),
        (["--fractions", "0.5", "--ramp-factor", "1"], "--ramp-factor > 1"),
    ],
)
def test_run_script_refuses_bad_load_arguments(args: list[str], message: str) -> None:
    argv = [sys.executable, str(LOADTESTS / "run.py"), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_pacer_spaces_requests_and_never_bursts_to_catch_up() -> None:
    sys.path.insert(0, str(LOADTESTS))
    try:
        from workload import Pacer
    finally:
        sys.path.remove(str(LOADTESTS))
    now = [100.0]
    pacer = Pacer(4.0, clock=lambda: now[0])
    assert [pacer.delay() for _ in range(3)] == [0.0, 0.25, 0.5]  # three users, one slot each
    now[0] = 105.0  # nobody asked for a while: the missed slots are gone, not owed
    assert pacer.delay() == 0.0 and pacer.delay() == 0.25
    with pytest.raises(ValueError, match="--rate must be a positive"):
        Pacer(0.0)
