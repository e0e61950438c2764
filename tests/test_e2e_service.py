"""The service as an operator runs it: `fedlearn api` (gunicorn) and `fedlearn worker`
processes on a real redis-server. A session sees its signals in the next model fetch; a
trainer killed with SIGKILL mid-stream and restarted applies every accepted event exactly once;
a Redis restart loses nothing that was acknowledged with 202."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedlearn.api import issue_token
from fedlearn.config import load_settings
from fedlearn.data.eventlog import read_log
from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port
from fedlearn.model import Base
from tests.live import Api, Service, applied_per_user, events_for, publish_base, wait_for

N_SHARDS = 4
SECRET = "e2e-secret-key-0123456789abcdef"
BASE = Base.fresh([f"item={i}" for i in range(40)] + ["genre=x", "genre=y"], 6, version="v1")


@pytest.fixture
def redis_always(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own (it gets restarted), fsyncing every write."""
    with EmbeddedRedis(tmp_path / "redis", appendfsync="always") as server:
        yield server


@pytest.fixture
def service(redis_always: EmbeddedRedis, tmp_path: Path) -> Iterator[Service]:
    settings = load_settings(
        redis_url=redis_always.url,
        secret_key=SECRET,
        n_shards=N_SHARDS,
        data_dir=tmp_path / "data",
        api_port=free_port(),
    )
    publish_base(redis_always.url, N_SHARDS, BASE)
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Service(settings, logs)
    try:
        yield running
    finally:
        running.stop_all()


def admin(service: Service, api: Api) -> Api:
    return Api(api.url, issue_token(service.settings, admin=True).token)


def post_all(api: Api, events: list[dict], batch: int = 200) -> int:
    accepted = 0
    for start in range(0, len(events), batch):
        response = api.call("POST", "/v1/events", {"events": events[start : start + batch]})
        assert response.status == 202, response.data[:300]
        accepted += response.json()["accepted"]
    return accepted


def test_a_session_sees_its_signals_in_the_next_model_fetch(service: Service) -> None:
    api = service.start_api()
    service.start("trainer", "worker", "--name", "t1")
    token = issue_token(service.settings, "alice").token
    alice = Api(api.url, token)
    start = alice.call("GET", "/v1/users/alice/model").json()
    assert start["events_applied"] == 0 and start["delta"]["features"] == []
    base = alice.call("GET", start["base_url"])
    assert base.status == 200 and "immutable" in base.headers["Cache-Control"]
    burst = [
        {"event_id": f"a{i}", "user": "alice", "item": "7", "signal": "skip", "ts": 1.7e9 + i}
        for i in range(12)
    ]
    assert alice.call("POST", "/v1/events", {"events": burst}).json() == {
        "accepted": 12,
        "duplicates": 0,
    }

    def reflected() -> bool:
        return alice.call("GET", "/v1/users/alice/model").json()["events_applied"] == 12

    wait_for(reflected, 20, "the model fetch to reflect the 12 signals")
    model = alice.call("GET", "/v1/users/alice/model").json()
    assert "item=7" in model["delta"]["features"]
    row = model["delta"]["features"].index("item=7")
    assert model["delta"]["w"][row] < 0, "twelve skips of item 7 must push its weight down"
    # A second rank now scores item 7 below an untouched item.
    ranked = alice.call(
        "POST", "/v1/users/alice/rank", {"items": [{"id": "7"}, {"id": "8"}]}
    ).json()
    assert [item["id"] for item in ranked["items"]] == ["8", "7"]


def test_a_trainer_killed_mid_stream_applies_every_event_exactly_once(service: Service) -> None:
    api = admin(service, service.start_api())
    users = [f"u{i}" for i in range(120)]
    events = events_for(users, 6000, seed=1)
    accepted = post_all(api, events)
    assert accepted == len(events)
    first = service.start("trainer-a", "worker", "--name", "a", "--batch-size", "50")
    settings = service.settings
    wait_for(
        lambda: sum(applied_per_user(settings, set(users)).values()) > 300,
        30,
        "the first trainer to apply some events",
    )
    service.kill("trainer-a", signal.SIGKILL)  # mid-stream: batches read but not committed
    assert first.returncode == -signal.SIGKILL
    done_before = sum(applied_per_user(settings, set(users)).values())
    assert 0 < done_before < len(events), "the kill must land mid-stream for the test to mean it"
    service.start("trainer-b", "worker", "--name", "b", "--batch-size", "50")
    expected = Counter(e["user"] for e in events)
    wait_for(
        lambda: applied_per_user(settings, set(users)) == expected,
        60,
        "every accepted event to be applied",
    )
    service.kill("trainer-b", signal.SIGTERM)  # drains the event log and exits cleanly
    assert service.procs["trainer-b"].returncode == 0, service.log("trainer-b")
    logged = Counter(r["event_id"] for r in read_log(settings.data_dir / "eventlog"))
    assert set(logged) == {e["event_id"] for e in events}
    assert max(logged.values()) == 1, "an event was logged (applied) twice"


def test_a_redis_restart_loses_nothing_acknowledged(
    service: Service, redis_always: EmbeddedRedis
) -> None:
    api = admin(service, service.start_api())
    users = [f"r{i}" for i in range(30)]
    first = events_for(users, 800, seed=2)
    assert post_all(api, first) == len(first)
    redis_always.restart(crash=True)  # SIGKILL: only what was fsynced survives
    second = events_for(users, 400, seed=3)

    def accepted_after_restart() -> bool:
        response = api.call("POST", "/v1/events", {"events": second[:1]})
        return response.status == 202

    wait_for(accepted_after_restart, 30, "the API to reconnect to the restarted Redis")
    assert post_all(api, second[1:]) == len(second) - 1
    # A retry of the first burst is recognised: nothing was forgotten, nothing doubles.
    again = api.call("POST", "/v1/events", {"events": first[:200]}).json()
    assert again == {"accepted": 0, "duplicates": 200}
    service.start("trainer", "worker", "--name", "t")
    expected = Counter(e["user"] for e in first + second)
    wait_for(
        lambda: applied_per_user(service.settings, set(users)) == expected,
        60,
        "every event acknowledged before and after the restart to be applied",
    )


def test_a_deleted_user_stays_forgotten_though_the_trainer_held_their_clone(
    service: Service,
) -> None:
    api = service.start_api()
    service.start("trainer", "worker", "--name", "t")
    bob = Api(api.url, issue_token(service.settings, "bob").token)
    first = [
        {"event_id": f"b{i}", "user": "bob", "item": "3", "signal": "click", "ts": 1.7e9 + i}
        for i in range(5)
    ]
    assert bob.call("POST", "/v1/events", {"events": first}).status == 202
    wait_for(
        lambda: bob.call("GET", "/v1/users/bob/model").json()["events_applied"] == 5,
        20,
        "bob's first events to be applied",
    )
    assert bob.call("DELETE", "/v1/users/bob").status == 204
    assert bob.call("GET", "/v1/users/bob/model").status == 401  # deleting revoked the token
    bob = Api(api.url, issue_token(service.settings, "bob").token)
    after = [{**first[0], "event_id": "b-after", "item": "4"}]
    assert bob.call("POST", "/v1/events", {"events": after}).status == 202

    def restarted() -> bool:
        return bob.call("GET", "/v1/users/bob/model").json()["events_applied"] == 1

    wait_for(restarted, 20, "bob's clone to restart from the event sent after the deletion")
    model = bob.call("GET", "/v1/users/bob/model").json()
    assert "item=3" not in model["delta"]["features"], "the trainer wrote the old clone back"
    assert "item=4" in model["delta"]["features"]
