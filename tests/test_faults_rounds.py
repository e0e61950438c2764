"""Rounds under faults and poison, on the service as an operator runs it: `fedlearn api`,
a `fedlearn worker` trainer and a Celery worker on a real redis-server, events streaming
through HTTP.

- A Celery worker SIGKILLed mid-round while 10,000 events stream: the round is abandoned
  (its heartbeat stopped), its lock released and a retry publishes within 60 s of the kill
  (measured and printed); every accepted event is applied once.
- The poisoning scenario: one user's stored delta is NaN, another's change is enormous; the
  round rejects both with their reasons, publishes a finite base, and the other users' model
  and rank answer 200.

Bounded: loopback only, a fixed number of events, every wait has a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedlearn.aggregate.checks import is_finite
from fedlearn.aggregate.round import TERMINAL
from fedlearn.aggregate.synthetic import write_deltas
from fedlearn.api import issue_token
from fedlearn.config import load_settings
from fedlearn.data.eventlog import read_log
from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port
from fedlearn.model import Base, Delta
from fedlearn.store import Store
from tests.live import Api, Service, wait_for
from tests.test_e2e_service import applied_per_user, events_for, post_all

REPO = Path(__file__).resolve().parents[1]
N_SHARDS = 4
SECRET = "faults-rounds-secret-0123456789ab"
# The watchdog's threshold in these tests: 4 s keeps CI short; FEDLEARN_FAULTS_STALE_S=30
# reruns the kill test at the service's default (the figure in BENCHMARKS.md).
STALE_S = float(os.environ.get("FEDLEARN_FAULTS_STALE_S", "4"))
HEAL_BOUND_S = 60.0
BASE = Base.fresh([f"item={i}" for i in range(40)] + ["genre=x"], 6, version="1")


class Live:
    """The running service: admin client, store, and the Celery worker to kill."""

    def __init__(self, service: Service, store: Store, api: Api) -> None:
        self.service, self.store, self.api = service, store, api

    def start_celery(self, name: str = "celery") -> None:
        """A Celery worker, as ``fedlearn up`` starts (and restarts) it, solo pool: its main
        process is the one that runs the tasks, so a SIGKILL kills the round's work."""
        log = self.service.logs / f"{name}.log"
        with log.open("ab") as out:
            self.service.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "fedlearn.jobs.app", "worker",
                 "--pool=solo", "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
                 "-l", "info"],
                cwd=REPO, env=self.service.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        ready = log.read_text().count(" ready.") + 1
        proc = self.service.procs[name]

        def up() -> bool:
            assert proc.poll() is None, self.service.log(name)
            return log.read_text(errors="replace").count(" ready.") >= ready

        wait_for(up, 60, f"Celery worker {name} to be ready")

    def round(self, round_id: str) -> dict[str, Any]:
        response = self.api.call("GET", f"/v1/aggregations/{round_id}")
        assert response.status == 200, response.data[:300]
        return response.json()

    def start_round(self) -> str:
        response = self.api.call("POST", "/v1/aggregations", {})
        assert response.status == 202, response.data[:300]
        return response.json()["id"]

    def finished(self, round_id: str, timeout: float = 60) -> dict[str, Any]:
        wait_for(lambda: self.round(round_id)["status"] in TERMINAL, timeout, f"round {round_id}")
        return self.round(round_id)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Callable[[Mapping[str, Delta]], Live]]:
    """Starts the service once ``deltas`` were committed (through the store, before any
    trainer holds the shards) on base 1."""
    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = load_settings(
            redis_url=server.url, secret_key=SECRET, n_shards=N_SHARDS,
            data_dir=tmp_path / "data", api_port=free_port(), aggregation_stale_s=STALE_S,
            aggregation_every_min=0,
        )  # fmt: skip
        logs = tmp_path / "logs"
        logs.mkdir()
        service = Service(settings, logs)
        with Store.from_url(server.url, N_SHARDS) as store:

            def start(deltas: Mapping[str, Delta]) -> Live:
                store.bases.put_base("1", BASE.to_bytes(), {"generation": 0})
                store.bases.set_current("1")
                write_deltas(store, deltas, base="1")
                api = service.start_api()
                service.start("trainer", "worker", "--name", "t1", "--batch-size", "100")
                live = Live(service, store, Api(api.url, issue_token(settings, admin=True).token))
                live.start_celery()
                return live

            try:
                yield start
            finally:
                service.stop_all()


def synthetic(n: int, *, seed: int) -> dict[str, Delta]:
    """``n`` users' small, honest deltas: enough users that a round takes seconds."""
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(n):
        d = Delta(BASE.n_factors)
        rows = d.rows_of([f"item={i}" for i in rng.choice(40, 4, replace=False)])
        d._w[rows] = rng.normal(0, 0.1, 4)
        d._v[rows] = rng.normal(0, 0.1, (4, BASE.n_factors))
        d.n_events = 4
        out[f"s{u}"] = d
    return out


def test_a_round_whose_worker_is_killed_heals_and_no_event_is_lost(
    up: Callable[[Mapping[str, Delta]], Live],
) -> None:
    live = up(synthetic(40_000, seed=1))
    settings = live.service.settings
    users = [f"u{i}" for i in range(200)]
    events = events_for(users, 10_000, seed=5)
    with ThreadPoolExecutor(1) as pool:
        posting = pool.submit(post_all, live.api, events)
        wait_for(
            lambda: sum(applied_per_user(settings, set(users)).values()) > 500,
            60, "the trainer to apply some of the streaming events",
        )  # fmt: skip
        dead = live.start_round()
        wait_for(lambda: live.round(dead)["status"] != "queued", 60, f"round {dead} to start")
        live.service.kill("celery", signal.SIGKILL)
        killed_at = time.monotonic()
        assert live.round(dead)["status"] == "running", "the kill must land mid-round"
        assert live.store.rounds.lock_holder() == dead
        live.start_celery()  # as the supervisor restarts a crashed child
        wait_for(lambda: "retried_by" in live.round(dead), HEAL_BOUND_S, "the retry")
        retry = live.round(dead)["retried_by"]
        record = live.finished(retry, HEAL_BOUND_S)
        healed_s = time.monotonic() - killed_at
        print(f"\nround {dead} killed mid-round; retry {retry} {record['status']} "
              f"{healed_s:.1f} s after the kill (stale_s={STALE_S:g})")  # fmt: skip
        assert record["status"] == "done", record.get("error")
        assert healed_s < HEAL_BOUND_S
        assert posting.result() == len(events)
    abandoned = live.round(dead)
    assert abandoned["status"] == "abandoned" and "no heartbeat" in abandoned["error"]
    assert record["retry_of"] == dead and record["result"]["users"] >= 40_000
    assert is_finite(Base.from_bytes(live.store.bases.get_base(record["result"]["version"])))
    assert live.store.rounds.lock_holder() is None
    expected = Counter(e["user"] for e in events)
    wait_for(
        lambda: applied_per_user(settings, set(users)) == expected,
        60, "every accepted event to be applied exactly once",
    )  # fmt: skip
    live.service.kill("trainer", signal.SIGTERM)  # drains the event log and exits
    logged = Counter(r["event_id"] for r in read_log(settings.data_dir / "eventlog"))
    assert set(logged) == {e["event_id"] for e in events}
    assert max(logged.values()) == 1, "an event was applied twice"


def test_a_poisoned_round_rejects_the_poison_and_everyone_else_is_served(
    up: Callable[[Mapping[str, Delta]], Live],
) -> None:
    nan, huge = Delta(BASE.n_factors), Delta(BASE.n_factors)
    nan._w[nan.rows_of(["item=1", "genre=x"])] = np.nan  # as a diverged clone would be
    nan.n_events = 40
    huge._w[huge.rows_of(["item=2"])] = 1e6  # no bounded clone moves that far
    huge._v[huge.rows_of(["item=2"])] = 1e6
    huge.n_events = 100
    live = up({"mallory": nan, "trudy": huge})
    users = [f"p{i}" for i in range(40)]
    events = events_for(users, 2_000, seed=6)
    assert post_all(live.api, events) == len(events)
    expected = Counter(e["user"] for e in events)
    settings = live.service.settings
    wait_for(lambda: applied_per_user(settings, set(users)) == expected, 60, "events applied")
    record = live.finished(live.start_round())
    assert record["status"] == "done", record.get("error")
    result = record["result"]
    named = result["rejected"]["users"]
    assert named["norm"] == ["trudy"]
    # a delta format that refuses to decode NaN reports it unreadable: rejected either way
    assert named.get("non_finite", []) + named.get("unreadable", []) == ["mallory"]
    assert result["users"] == len(users)
    assert live.store.bases.current_version() == result["version"] != "1"
    new = Base.from_bytes(live.store.bases.get_base(result["version"]))
    assert is_finite(new) and np.abs(new.w).max() < 10
    assert live.api.call("GET", "/readyz", token="").status == 200
    for user in users[:5]:
        client = Api(live.api.url, issue_token(settings, user).token)
        model = client.call("GET", f"/v1/users/{user}/model")
        assert model.status == 200, model.data[:300]
        assert model.json()["base_version"] == result["version"]
        ranked = client.call(
            "POST", f"/v1/users/{user}/rank", {"items": [{"id": "1"}, {"id": "2"}]}
        )
        assert ranked.status == 200, ranked.data[:300]
        assert all(np.isfinite(item["score"]) for item in ranked.json()["items"])
