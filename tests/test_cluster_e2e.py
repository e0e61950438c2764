"""Scale-out on a real 3-master Redis Cluster: the same commands an operator runs, unchanged,
with ``REDIS_URL`` pointing at one cluster node.

Two API processes (``fedlearn api``, gunicorn), three trainers (``fedlearn worker``) and two
Celery workers (``celery -A fedlearn.jobs.app worker``). Events for many users go through
both APIs; one trainer is killed with SIGKILL mid-stream. Every accepted event must be applied
exactly once (in total and per user), the shards must spread over the trainers as they join
and leave, and an aggregation round started with ``POST /v1/aggregations`` must publish a base
version on the cluster.

Celery's queues are the one thing that does not live on the cluster: kombu's Redis transport
speaks to a single Redis (its multi-key commands span slots), so the workers and the API get a
plain Redis as broker through Celery's own ``CELERY_BROKER_URL`` / ``CELERY_RESULT_BACKEND``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import urllib3

from fedlearn.api import issue_token
from fedlearn.config import Settings, load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.cluster import EmbeddedCluster
from fedlearn.devtools.embedded import free_port
from fedlearn.model import Base
from fedlearn.store import Store
from tests.live import Api, Service, wait_for

N_SHARDS = 8
N_USERS = 300
EVENTS = 6000
SECRET = "cluster-e2e-secret-0123456789abc"
BASE = Base.fresh([f"item={i}" for i in range(40)], 4, version="1")
REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path / "cluster", masters=3) as running:
        yield running


@pytest.fixture
def service(cluster: EmbeddedCluster, tmp_path: Path) -> Iterator[Service]:
    settings = load_settings(
        redis_url=cluster.url, secret_key=SECRET, n_shards=N_SHARDS,
        data_dir=tmp_path / "data", api_port=free_port(),
    )  # fmt: skip
    with Store.from_url(cluster.url, N_SHARDS) as store:
        assert store.is_cluster
        store.bases.put_base(BASE.version, BASE.to_bytes(), {"generation": 0})
        store.bases.set_current(BASE.version)
    logs = tmp_path / "logs"
    logs.mkdir()
    with EmbeddedRedis(tmp_path / "broker") as broker:
        running = Service(settings, logs)
        running.env["CELERY_BROKER_URL"] = broker.url
        running.env["CELERY_RESULT_BACKEND"] = broker.url
        try:
            yield running
        finally:
            running.stop_all()


def start_celery(service: Service, name: str) -> None:
    with (service.logs / f"{name}.log").open("ab") as out:
        service.procs[name] = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "fedlearn.jobs.app", "worker",
                "--pool=solo", "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
                "-l", "info",
            ],
            cwd=REPO, env=service.env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip


def holders(settings: Settings) -> list[str | None]:
    """The trainer name holding each shard's lease (``None``: nobody)."""
    with Store.from_url(settings.redis_url, N_SHARDS) as store:
        return [h.split("@")[0] if (h := store.leases.holder(s)) else None for s in store.shards]


def spread_over(settings: Settings, names: set[str]) -> bool:
    owners = holders(settings)
    share = -(-N_SHARDS // len(names))
    counts = Counter(owners)
    return set(owners) == names and max(counts.values()) <= share


def applied_per_user(settings: Settings, users: list[str]) -> Counter:
    with Store.from_url(settings.redis_url, N_SHARDS) as store:
        counts: Counter = Counter()
        for user in users:
            record = store.deltas.get(store.shard_of(user), user)
            counts[user] = record.events if record else 0
        return counts


def make_events(users: list[str]) -> list[dict]:
    rng = np.random.default_rng(11)
    return [
        {
            "event_id": f"ev-{i}",
            "user": users[int(rng.integers(len(users)))],
            "item": str(int(rng.integers(40))),
            "signal": "click" if rng.random() < 0.4 else "skip",
            "ts": 1.7e9 + i,
        }
        for i in range(EVENTS)
    ]


def test_the_service_scales_out_on_a_redis_cluster(service: Service) -> None:
    settings = service.settings
    admin = issue_token(settings, admin=True).token
    first = Api(service.start_api(workers=1).url, admin)
    second_port = free_port()
    service.start("api-2", "api", "--port", str(second_port), "--workers", "1")
    second = Api(f"http://127.0.0.1:{second_port}", admin)
    wait_for(lambda: _answers(second), 30, "the second API to answer /readyz")

    service.start("t1", "worker", "--name", "t1", "--batch-size", "100")
    wait_for(lambda: holders(settings) == ["t1"] * N_SHARDS, 30, "t1 to own every shard")
    for name in ("t2", "t3"):
        service.start(name, "worker", "--name", name, "--batch-size", "100")
    wait_for(lambda: spread_over(settings, {"t1", "t2", "t3"}), 40, "shards to spread over 3")
    for name in ("celery-1", "celery-2"):
        start_celery(service, name)

    users = [f"user-{i}" for i in range(N_USERS)]
    events = make_events(users)
    accepted = Counter()
    for i, start in enumerate(range(0, EVENTS, 200)):
        batch = events[start : start + 200]
        api = first if i % 2 == 0 else second
        answer = api.call("POST", "/v1/events", {"events": batch})
        assert answer.status == 202, answer.data[:300]
        assert answer.json() == {"accepted": len(batch), "duplicates": 0}
        accepted.update(e["user"] for e in batch)
        if start == EVENTS // 2:
            orphaned = [s for s, name in enumerate(holders(settings)) if name == "t2"]
            assert service.kill("t2", signal.SIGKILL) == -signal.SIGKILL
    assert sum(accepted.values()) == EVENTS
    assert orphaned, "t2 must have owned shards when it was killed for the test to mean it"

    wait_for(lambda: spread_over(settings, {"t1", "t3"}), 60, "t2's shards to move to t1, t3")
    assert all(holders(settings)[s] in ("t1", "t3") for s in orphaned)
    wait_for(
        lambda: applied_per_user(settings, users) == accepted,
        90,
        "every accepted event to be applied exactly once",
    )
    counts = applied_per_user(settings, users)
    assert sum(counts.values()) == EVENTS and counts == accepted

    with Store.from_url(settings.redis_url, N_SHARDS) as store:
        stats = store.telemetry.shard_stats()
        assert sum(s.users for s in stats) == len(accepted)
        assert all(s.pending == 0 and s.lag_seconds == 0 for s in stats)

    started = first.call("POST", "/v1/aggregations", {})
    assert started.status == 202, started.data[:500]
    url = started.json()["url"]

    def finished() -> bool:
        return first.call("GET", url).json()["status"] in ("done", "failed", "skipped")

    wait_for(finished, 90, "the aggregation round to finish on the Celery workers")
    record = first.call("GET", url).json()
    assert record["status"] == "done", record
    version = record["result"]["version"]
    assert record["result"]["users"] == len(accepted)
    with Store.from_url(settings.redis_url, N_SHARDS) as store:
        assert store.bases.current_version() == version != BASE.version
    current = second.call("GET", "/v1/base/current")
    assert current.status == 307 and current.json()["version"] == version


def _answers(api: Api) -> bool:
    try:
        return api.call("GET", "/readyz").status == 200
    except urllib3.exceptions.HTTPError:
        return False
