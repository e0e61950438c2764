"""``/metrics`` of a real ``celery -A ... worker --metrics-port`` process: the latest round's
figures read from Redis at scrape time, and the worker's own process metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.run import run_round_inline
from fedlearn.aggregate.synthetic import random_deltas, write_deltas
from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port
from fedlearn.model import Base
from fedlearn.store import Store

REPO = Path(__file__).resolve().parents[1]
N_SHARDS = 4

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# The Celery app with the metrics installed (a no-op once fedlearn/jobs/app.py does it).
APP_MODULE = """
from fedlearn.jobs.app import app
from fedlearn.telemetry.jobs import MetricsServer, install

if MetricsServer not in app.steps["worker"]:
    install(app)
"""


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = urllib3.request("GET", url, timeout=5.0).data.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_celery_worker_serves_the_latest_round(tmp_path: Path) -> None:
    (tmp_path / "metrics_app.py").write_text(APP_MODULE)
    with EmbeddedRedis(tmp_path / "redis") as server:
        with Store.from_url(server.url, N_SHARDS) as store:
            base = Base.fresh([f"item={i}" for i in range(30)], 3, version="1")
            store.bases.put_base("1", base.to_bytes(), {"generation": 0})
            store.bases.set_current("1")
            deltas = random_deltas(np.random.default_rng(1), 25, n_factors=3, n_items=30)
            write_deltas(store, deltas, base="1")
            record = run_round_inline(store, AggregationConfig(min_users=2, min_row_users=1))
        assert record["status"] == "done"
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "FEDLEARN_N_SHARDS": str(N_SHARDS),
            "FEDLEARN_DATA_DIR": str(tmp_path / "data"),
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        }
        env.pop("FEDLEARN_REDIS_URL", None)
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "metrics_app", "worker",
                    "--pool=solo", "--without-gossip", "--without-mingle", "-l", "info",
                    "--metrics-port", str(port),
                ],
                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            deadline = time.monotonic() + 60
            samples = None
            while samples is None:
                assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "the worker's /metrics never answered"
                try:
                    samples = scrape(url)
                except urllib3.exceptions.HTTPError:
                    time.sleep(0.2)
            result = record["result"]
            assert samples[("fedlearn_round_users", ())] == result["users"] == 25
            assert samples[("fedlearn_round_events", ())] == result["events"]
            assert samples[("fedlearn_rounds_recent", (("status", "done"),))] == 1
            assert samples[("fedlearn_base_version_info", (("version", "2"),))] == 1
            assert samples[("process_resident_memory_bytes", ())] > 0
            assert not any(name.startswith("fedlearn_stream") for name, _ in samples)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(30) == 0, log.read_text(errors="replace")[-3000:]
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
