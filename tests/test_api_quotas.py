"""What one user token may ask, over real HTTP on a real redis-server: the cell cap of a rank
call (413), the Redis a token's rank calls may grow (its prediction quota), a prediction_id
bound to its user (a trainer trains another user's event on nothing of the owner's), a
forgotten user's tokens refused at once (401), and the model GET's reads in one round trip."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedlearn.api import issue_token
from fedlearn.config import Settings, load_settings
from fedlearn.data.eventlog import read_log
from fedlearn.model import Base
from fedlearn.store import Store, keys
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.eventlog import EventLogWriter
from fedlearn.trainer.trainer import Trainer, TrainerConfig
from tests.live import Api
from tests.test_trainer import append, run_until

SECRET = "quota-test-secret-0123456789"
N_SHARDS = 2
QUOTA_BYTES = 2 << 20
BASE = Base.fresh(["item=a", "item=b"], 2, version="v1")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        secret_key=SECRET, n_shards=N_SHARDS, data_dir=tmp_path, max_rank_cells=20_000,
        prediction_max_bytes_per_user=QUOTA_BYTES, prediction_max_per_user=1000,
    )  # fmt: skip


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    with Store.from_url(redis_url, N_SHARDS) as s:
        s.bases.put_base(BASE.version, BASE.to_bytes(), {"generation": 0})
        s.bases.set_current(BASE.version)
        yield s


def as_user(url: str, settings: Settings, user: str) -> Api:
    return Api(url, issue_token(settings, user=user).token)


def problem(response, status: int) -> dict:
    assert response.status == status, response.data[:300]
    assert response.headers["Content-Type"] == "application/problem+json"
    return response.json()


def test_a_rank_call_over_the_cell_cap_is_413_and_stores_nothing(url, settings, store):
    alice = as_user(url, settings, "alice")
    context = {f"c{i}": "x" for i in range(20)}
    items = [{"id": f"i{n}", "features": {"genre=x": 1.0}} for n in range(1000)]
    body = problem(
        alice.call("POST", "/v1/users/alice/rank", {"items": items, "context": context}), 413
    )
    assert "21000 feature cells" in body["detail"] and "at most 20000" in body["detail"]
    assert "FEDLEARN_MAX_RANK_CELLS" in body["detail"]
    assert body["errors"] == [{"field": "items", "message": "21000 cells, at most 20000"}]
    assert store.client.keys("fl:*:preds:*") == []
    fits = {"items": items[:950], "context": context}
    assert alice.call("POST", "/v1/users/alice/rank", fits).status == 200


def maximal_rank_request(settings: Settings) -> dict:
    """A rank call as large as the limits allow: the cell cap, and a body under the byte cap."""
    n_items, own = 1000, 9
    context = {f"c{i}": "v" * 90 for i in range(settings.max_rank_cells // n_items - own)}
    items = [
        {"id": f"item-{n:04d}", "features": {f"{n:04d}-{j}-{'f' * 90}": 1.0 for j in range(own)}}
        for n in range(n_items)
    ]
    return {"items": items, "context": context}


def held_by_redis(store: Store) -> int:
    """Redis' memory less its AOF buffers: these hold the last writes only while an AOF
    rewrite runs (auto-rewrite can start at any point of a long test session: Redis 6.2 then
    keeps every write made meanwhile), so they are not what a token keeps stored."""
    memory = store.client.info("memory")
    return int(memory["used_memory"]) - int(memory.get("mem_aof_buffer", 0))


def test_one_token_grows_redis_by_at_most_its_prediction_quota(url, settings, store):
    request = maximal_rank_request(settings)
    alice = as_user(url, settings, "alice")
    assert alice.call("POST", "/v1/users/alice/rank", request).status == 200  # warm up
    before = held_by_redis(store)
    calls = 40
    for _ in range(calls):
        response = alice.call("POST", "/v1/users/alice/rank", request)
        assert response.status == 200, response.data[:300]
    grown = held_by_redis(store) - before
    shard = store.shard_of("alice")
    record = len(
        store.client.hget(f"fl:{{s{shard}}}:preds:alice", response.json()["prediction_id"])
    )
    kept = store.client.memory_usage(f"fl:{{s{shard}}}:preds:alice")
    print(
        f"\n{calls} maximal rank calls of one token: record {record / 1e6:.2f} MB, "
        f"{record * calls / 1e6:.0f} MB unbounded; Redis grew {grown / 1e6:.2f} MB, the user's "
        f"records hold {kept / 1e6:.2f} MB (quota {QUOTA_BYTES / 1e6:.2f} MB)"
    )
    assert record * calls > 10 * QUOTA_BYTES  # without the quota, Redis would hold all of them
    assert kept <= QUOTA_BYTES + 64 * 1024
    assert grown <= QUOTA_BYTES + (1 << 20)  # slack: client buffers, allocator rounding


def test_an_event_naming_another_users_prediction_trains_on_nothing_of_theirs(
    url, settings, store, tmp_path
):
    alice, mallory = as_user(url, settings, "alice"), as_user(url, settings, "mallory")
    ranked = alice.call(
        "POST", "/v1/users/alice/rank", {"items": [{"id": "a", "features": {"secret=1": 1.0}}]}
    ).json()
    pid = ranked["prediction_id"]
    event = {"item": "a", "signal": "click", "ts": 1.0, "prediction_id": pid}
    sent = [({**event, "event_id": "m1", "user": "mallory"}, mallory),
            ({**event, "event_id": "a1", "user": "alice"}, alice)]  # fmt: skip
    for body, api in sent:
        assert api.call("POST", "/v1/events", {"events": [body]}).status == 202
    log = EventLogWriter(store, tmp_path / "log")
    trainer = Trainer(
        store, lambda _base: CloneSettings(lr=0.05, l2=0.01, bias_lr=0.1),
        TrainerConfig(batch_size=16), eventlog=log,
    )  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=trainer.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 20
    while trainer.applied_total < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(10)
    logged = {r["user"]: r for r in read_log(tmp_path / "log")}
    assert logged["alice"]["features_from"] == "prediction"
    assert "secret=1" in logged["alice"]["features"]
    assert logged["mallory"]["features_from"] == "event"
    assert not any("alice" in f or "secret" in f for f in logged["mallory"]["features"])


def test_forgetting_a_user_revokes_their_tokens_at_once(url, settings, store):
    alice = as_user(url, settings, "alice")
    bob = as_user(url, settings, "bob")
    admin = Api(url, issue_token(settings, admin=True).token)
    assert alice.call("GET", "/v1/users/alice/model").status == 200
    assert alice.call("DELETE", "/v1/users/alice").status == 204
    body = problem(alice.call("GET", "/v1/users/alice/model"), 401)
    assert "revoked" in body["detail"] and "'alice'" in body["detail"]
    event = {"event_id": "e1", "user": "alice", "item": "a", "signal": "click", "ts": 1.0}
    problem(alice.call("POST", "/v1/events", {"events": [event]}), 401)
    assert sum(store.streams.length(s) for s in store.shards) == 1  # only the forget entry
    assert as_user(url, settings, "alice").call("GET", "/v1/users/alice/model").status == 200
    assert bob.call("GET", "/v1/users/bob/model").status == 200  # other users are untouched
    assert admin.call("DELETE", "/v1/users/bob").status == 204  # an admin forgetting bob
    problem(bob.call("GET", "/v1/users/bob/model"), 401)
    assert admin.call("GET", "/v1/users/bob/model").status == 200  # admins are never revoked
    shard = store.shard_of("bob")
    ttl = store.client.ttl(f"fl:{{s{shard}}}:revoked:bob")
    assert settings.max_token_ttl_s - 5 < ttl <= settings.max_token_ttl_s


def test_a_revoked_token_gets_its_401_first_and_counts_against_no_limit(url, settings, store):
    """The revocation check rides with the rate check (one round trip); a request refused
    before that still answers 401, and a revoked token's request counts nothing."""
    alice = as_user(url, settings, "alice")
    assert alice.call("DELETE", "/v1/users/alice").status == 204
    event = {"event_id": "e1", "user": "alice", "item": "a", "signal": "click", "ts": 1.0}
    refused = [
        alice.call("POST", "/v1/events", {"events": [event]}),
        alice.call("POST", "/v1/events", {"events": [{**event, "user": "bob"}]}),  # else 403
        alice.call("POST", "/v1/events", {"events": [{"user": "alice"}]}),  # else 422
        alice.call("POST", "/v1/events", {"events": [event] * (settings.rate_events_burst + 1)}),
        alice.call("POST", "/v1/users/alice/rank", {"items": [{"id": "a"}]}),
        alice.call("POST", "/v1/users/alice/rank", {"items": "a"}),  # else 422
    ]
    for response in refused:
        assert "revoked" in problem(response, 401)["detail"]
    shard = store.shard_of("alice")
    assert store.client.keys(f"fl:{{s{shard}}}:rate:*") == []
    assert sum(store.streams.length(s) for s in store.shards) == 1  # only the forget entry
    again = as_user(url, settings, "alice")
    # A bucket's key expires once it is full again: 200 events and 20 rank calls take 4 and
    # 2 s to refill at the default rates (one of each took 20 and 100 ms, less than a loaded
    # machine's pause before the check).
    events = [{**event, "event_id": f"e{i}"} for i in range(200)]
    assert again.call("POST", "/v1/events", {"events": events}).status == 202
    for _ in range(20):
        assert again.call("POST", "/v1/users/alice/rank", {"items": [{"id": "a"}]}).status == 200
    assert len(store.client.keys(f"fl:{{s{shard}}}:rate:*")) == 2


def train(store: Store, settings: Settings, events: list[dict]) -> None:
    append(store, events)
    trainer = Trainer(
        store, lambda b: CloneSettings(**settings.clone_hyper(b.hyper)), TrainerConfig(name="t")
    )
    user = events[0]["user"]

    def applied() -> bool:
        record = store.deltas.get(store.shard_of(user), user)
        return record is not None and record.events == len(events)

    run_until(trainer, applied)


def test_a_user_and_an_admin_get_the_model_in_one_round_trip(url, settings, store, round_trips):
    """Revocation, base pointer, delta record and rebase notes: one pipeline."""
    events = [
        {"event_id": f"e{i}", "user": "alice", "item": "a", "signal": "click", "ts": 1.0 + i}
        for i in range(3)
    ]
    train(store, settings, events)
    alice = as_user(url, settings, "alice")
    admin = Api(url, issue_token(settings, admin=True).token)
    assert alice.call("GET", "/v1/users/alice/model").status == 200  # the base read, once
    for api in (alice, admin, alice):
        round_trips[0] = 0
        answer = api.call("GET", "/v1/users/alice/model")
        assert answer.status == 200, answer.data[:300]
        assert round_trips[0] == 1
        body = answer.json()
        assert body["base_version"] == "v1" and body["events_applied"] == 3
        assert body["delta"]["features"] and body["last_event"] is not None


def test_a_revoked_tokens_model_get_gets_its_401_before_any_other_answer(url, settings, store):
    """The model GET reads the revocation with the user's records (one round trip); a request
    refused before that, or one that would fail after it, still answers 401."""
    alice = as_user(url, settings, "alice")
    admin = Api(url, issue_token(settings, admin=True).token)
    assert alice.call("DELETE", "/v1/users/alice").status == 204
    store.client.delete(keys.base_current())  # no base: the model would be a 503
    refused = [
        alice.call("GET", "/v1/users/alice/model"),  # else 503
        alice.call("GET", "/v1/users/bob/model"),  # else 403
        alice.call("GET", "/v1/users/" + "x" * 200 + "/model"),  # else 422
    ]
    for response in refused:
        assert "revoked" in problem(response, 401)["detail"]
    assert admin.call("GET", "/v1/users/alice/model").status == 503  # admins are not revoked
    assert as_user(url, settings, "alice").call("GET", "/v1/users/alice/model").status == 503
