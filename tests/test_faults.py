"""Process faults against ``fedlearn up`` as an operator runs it, while events stream in.

Each fault lands in the middle of 10,000 events sent through the real HTTP API by a client
that resends a batch until it gets a 202 (same event ids). For each: every event that got a
202 is applied exactly once (per user, the ``events`` count of the stored delta equals what
was sent, and each event id is in the durable event log exactly once), and the service is
healthy again (``/readyz`` 200 and a fresh event applied) within 10 s of the kill; the
recovery time is printed. Also: poison entries and an unreadable delta are set aside and the
user's other events go on, and a trainer that loses its Redis with nobody to restart it exits
non-zero instead of hanging. Loopback only, bounded in time and in events.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import redis

from fedlearn.api import issue_token
from fedlearn.config import Settings, load_settings
from fedlearn.data.eventlog import read_log
from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port
from fedlearn.devtools.runtime import read_runtime
from fedlearn.model import Base
from fedlearn.store import Store, keys
from tests.live import (
    Api,
    Producer,
    Service,
    applied_per_user,
    children,
    events_for,
    pid_alive,
    publish_base,
    stop_gracefully,
    wait_for,
    wait_healthy,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

N_SHARDS = 4
N_EVENTS = 10_000
RECOVERY_LIMIT_S = 10.0
SECRET = "faults-secret-key-0123456789abcdef"
BASE = Base.fresh([f"item={i}" for i in range(40)], 6, version="v1")


@dataclass
class Up:
    """A running ``fedlearn up`` and how to reach what it started."""

    proc: subprocess.Popen[bytes]
    folder: Path
    settings: Settings
    api: Api

    def output(self) -> str:
        return (self.folder / "up.out").read_text(errors="replace")

    def part(self, word: str) -> int:
        """The pid of the child process whose command line has ``fedlearn <word>``."""
        found = [pid for pid, cmd in children(self.proc.pid).items() if f"fedlearn {word}" in cmd]
        assert len(found) == 1, (word, children(self.proc.pid))
        return found[0]

    def redis_pid(self) -> int:
        assert self.settings.redis_url is not None
        with redis.Redis.from_url(self.settings.redis_url) as client:
            return int(client.info("server")["process_id"])


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """``fedlearn up --no-celery`` with its embedded Redis fsyncing every write."""
    folder = tmp_path_factory.mktemp("faults")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "FEDLEARN_REDIS_URL")}
    env.update(
        FEDLEARN_SECRET_KEY=SECRET, FEDLEARN_N_SHARDS=str(N_SHARDS), PYTHONUNBUFFERED="1",
        FEDLEARN_REDIS_APPENDFSYNC="always",
    )  # fmt: skip
    argv = [sys.executable, "-m", "fedlearn", "up", "--no-celery", "--port", str(port),
            "--data-dir", str(folder / "data")]  # fmt: skip
    with (folder / "up.out").open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: bool((read_runtime(folder / "data") or {}).get("redis_url")), 60,
                 "fedlearn up to start Redis")  # fmt: skip
        redis_url = read_runtime(folder / "data")["redis_url"]
        settings = load_settings(
            redis_url=redis_url, secret_key=SECRET, n_shards=N_SHARDS, data_dir=folder / "data"
        )
        publish_base(redis_url, N_SHARDS, BASE)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, folder / "up.out", timeout=60)
        api = Api(url, issue_token(settings, admin=True).token, timeout=5.0)
        yield Up(proc, folder, settings, api)
    finally:
        parts = children(proc.pid)  # the API, the trainer and redis-server
        stop_gracefully(proc)
    # After all the faults, SIGTERM still stops everything cleanly.
    assert proc.returncode == 0, (folder / "up.out").read_text(errors="replace")[-3000:]
    assert not [pid for pid in parts if pid_alive(pid)], parts


def applied_once(up: Up, probe: str, event_id: str, n: int) -> bool:
    """``/readyz`` answers 200 and the probe user's delta counts ``n`` events."""
    try:
        if up.api.call("GET", "/readyz").status != 200:
            return False
        event = {"event_id": event_id, "user": probe, "item": "1", "signal": "click", "ts": 1.7e9}
        if up.api.call("POST", "/v1/events", {"events": [event]}).status != 202:
            return False
        model = up.api.call("GET", f"/v1/users/{probe}/model")
        return model.status == 200 and model.json()["events_applied"] >= n
    except Exception:  # refused, reset, timed out, or a body that is not JSON: not yet
        return False


def recovery_time(up: Up, name: str, killed_at: float) -> float:
    """Seconds from the kill until the service is ready and has applied a fresh event."""
    probe = f"{name}-probe"
    wait_for(lambda: applied_once(up, probe, f"{name}-probe-1", 1), 60, f"{name}: recovery")
    return time.monotonic() - killed_at


def logged_ids(up: Up, prefix: str) -> Counter:
    return Counter(
        r["event_id"]
        for r in read_log(up.settings.data_dir / "eventlog")
        if r["event_id"].startswith(prefix)
    )


def stream_through(up: Up, name: str, seed: int, kill: Callable[[], None]) -> float:
    """Stream N_EVENTS, ``kill`` something a third of the way in, check that every event was
    applied once and that the service recovered in time; returns the recovery time."""
    users = [f"{name}-u{i}" for i in range(150)]
    events = events_for(users, N_EVENTS, seed=seed)
    producer = Producer(Api(up.api.url, up.api.token, timeout=5.0), events, pause_s=0.02)
    producer.start()
    wait_for(lambda: producer.sent >= N_EVENTS // 3 or not producer.is_alive(), 60,
             f"{name}: a third of the events to be accepted")  # fmt: skip
    kill()
    killed_at = time.monotonic()
    recovered = recovery_time(up, name, killed_at)
    producer.join(120)
    assert not producer.is_alive() and producer.error is None, producer.error
    print(f"\n{name}: recovered {recovered:.1f} s after the kill; "
          f"{producer.retries} batches resent")  # fmt: skip
    expected = Counter(e["user"] for e in events)
    try:
        wait_for(lambda: applied_per_user(up.settings, set(users)) == expected, 90,
                 f"{name}: every accepted event to be applied")  # fmt: skip
    except AssertionError as exc:  # say what is missing or doubled, and what the parts said
        applied = applied_per_user(up.settings, set(users))
        missing, extra = expected - applied, applied - expected
        raise AssertionError(
            f"{exc}: {sum(missing.values())} events missing ({len(missing)} users), "
            f"{sum(extra.values())} applied twice; the service's last lines:\n"
            + "\n".join(up.output().splitlines()[-40:])
        ) from None
    prefix = f"ev-{seed}-"
    logged: Counter = Counter()

    def all_logged() -> bool:
        try:
            logged.clear()
            logged.update(logged_ids(up, prefix))
        except orjson.JSONDecodeError:  # read while the writer appends: a line not whole yet
            return False
        return len(logged) == N_EVENTS

    wait_for(all_logged, 30, f"{name}: every applied event to reach the event log")
    assert max(logged.values()) == 1, "an event was applied (logged) twice"
    assert applied_per_user(up.settings, set(users)) == expected, "an event applied twice"
    assert recovered <= RECOVERY_LIMIT_S, f"{name}: recovery took {recovered:.1f} s"
    return recovered


def test_a_killed_trainer_is_restarted_and_loses_nothing(up: Up) -> None:
    trainer = up.part("worker")
    stream_through(up, "trainer", 11, lambda: os.kill(trainer, signal.SIGKILL))
    assert f"(pid {trainer}) exited with signal SIGKILL" in up.output()


def test_a_killed_api_master_is_restarted_on_the_same_port(up: Up) -> None:
    master = up.part("api")
    workers = list(children(master))
    assert workers, "gunicorn has no workers"
    stream_through(up, "api", 12, lambda: os.kill(master, signal.SIGKILL))
    # The orphaned workers noticed their master was gone and left; a new master serves.
    wait_for(lambda: not any(pid_alive(w) for w in workers), 10, "orphaned workers to exit")
    assert up.part("api") != master
    wait_for(lambda: applied_once(up, "api-probe", "api-probe-2", 2), RECOVERY_LIMIT_S,
             "the restarted API master to serve")  # fmt: skip
    assert f"(pid {master}) exited with signal SIGKILL" in up.output()


def test_a_killed_redis_is_restarted_with_its_data(up: Up) -> None:
    pid = up.redis_pid()
    stream_through(up, "redis", 13, lambda: os.kill(pid, signal.SIGKILL))
    assert up.redis_pid() != pid
    assert "exited with signal SIGKILL; restarting it" in up.output()


def test_poison_entries_and_an_unreadable_delta_are_set_aside(up: Up) -> None:
    assert up.settings.redis_url is not None
    user = "poisoned-user"
    with Store.from_url(up.settings.redis_url, N_SHARDS) as store:
        shard = store.shard_of(user)
        store.client.hset(keys.delta(shard, user), mapping={
            "delta": b"FLDL-not-really", "last_event": "0-1", "base": BASE.version,
            "generation": 0, "events": 3,
        })  # fmt: skip
        # An unreadable record is served as the base, not as a 500.
        model = up.api.call("GET", f"/v1/users/{user}/model")
        assert model.status == 200 and model.json()["serve"] == "base", model.data[:300]
        exposition = up.api.call("GET", "/metrics").data.decode()
        assert re.search(r"^fedlearn_unreadable_records_total [1-9]", exposition, re.M)
        store.client.xadd(keys.stream(shard), {"e": b"\xff not an event"})
        store.client.xadd(keys.stream(shard), {"e": orjson.dumps({"user": user, "item": []})})
    events = [
        {"event_id": f"p{i}", "user": user, "item": str(i % 5), "signal": "skip", "ts": 1.7e9}
        for i in range(20)
    ]
    assert up.api.call("POST", "/v1/events", {"events": events}).status == 202

    def applied() -> bool:
        return up.api.call("GET", f"/v1/users/{user}/model").json()["events_applied"] == 20

    wait_for(applied, 30, "the poisoned user's events to be applied from a fresh clone")
    env = {**os.environ, "FEDLEARN_DATA_DIR": str(up.settings.data_dir),
           "FEDLEARN_N_SHARDS": str(N_SHARDS)}  # fmt: skip
    env.pop("REDIS_URL", None)
    listed = subprocess.run(
        [sys.executable, "-m", "fedlearn", "dead-letters", "--json", "--shard", str(shard)],
        env=env, capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    letters = [orjson.loads(line) for line in listed.stdout.splitlines()]
    kinds = Counter(letter["kind"] for letter in letters)
    assert kinds["invalid_entry"] >= 2 and kinds["unreadable_delta"] >= 1, letters
    [delta_letter] = [x for x in letters if x["kind"] == "unreadable_delta"]
    assert delta_letter["user"] == user and delta_letter["reason"]
    assert up.api.call("GET", "/readyz").status == 200


def test_a_trainer_without_redis_exits_non_zero_instead_of_hanging(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        settings = load_settings(
            redis_url=server.url, secret_key=SECRET, n_shards=N_SHARDS, data_dir=tmp_path / "d"
        )
        publish_base(server.url, N_SHARDS, BASE)
        logs = tmp_path / "logs"
        logs.mkdir()
        service = Service(settings, logs)
        try:
            trainer = service.start("trainer", "worker", "--name", "lonely")
            wait_for(lambda: "acquired shard" in service.log("trainer"), 30, "shards acquired")
            server.kill()
            killed = time.monotonic()
            trainer.wait(30)
            took = time.monotonic() - killed
        finally:
            service.stop_all()
    print(f"\nthe trainer exited {took:.1f} s after its Redis was killed")
    assert trainer.returncode == 1, service.log("trainer")
    # The whole log: the traceback logged after the line can be longer than log()'s tail.
    assert "failed after applying" in (logs / "trainer.log").read_text(errors="replace")
    assert took < 15
