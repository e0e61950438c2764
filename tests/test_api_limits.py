"""Limits and back-pressure over real HTTP: too many events (422) or too big a body (413), a full
shard stream (429 with Retry-After, nothing of that shard written), a batch across a full and a
free shard (the answer says exactly what was written), and Redis going away (503)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import urllib3

from fedlearn.api import create_app
from fedlearn.api.server import ThreadedServer
from fedlearn.config import Settings, load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.model import Base
from fedlearn.store import Store, connect, shard_of

N_SHARDS = 2
MAXLEN = 5
BASE = Base.fresh(["item=a"], 2, version="v1")
HTTP = urllib3.PoolManager(retries=False, timeout=30.0)


def users_in(shard: int, count: int) -> list[str]:
    return [u for u in (f"u{i}" for i in range(200)) if shard_of(u, N_SHARDS) == shard][:count]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings(
        auth=False, n_shards=N_SHARDS, stream_maxlen=MAXLEN, max_events_per_request=8,
        max_body_bytes=4096, max_rank_items=3, retry_after_s=7, data_dir=tmp_path,
    )  # fmt: skip


@pytest.fixture
def store(redis_url: str, settings: Settings) -> Iterator[Store]:
    with Store.from_url(redis_url, N_SHARDS, stream_maxlen=MAXLEN) as s:
        s.bases.put_base("v1", BASE.to_bytes())
        s.bases.set_current("v1")
        yield s


def post(url: str, path: str, json: Any = None, body: bytes | None = None):
    data = orjson.dumps(json) if json is not None else body
    return HTTP.request("POST", url + path, body=data, headers={"Content-Type": "application/json"})


def events_of(users: list[str], start: int = 0) -> list[dict[str, Any]]:
    return [
        {"event_id": f"{u}-{start + i}", "user": u, "item": "a", "signal": "click", "ts": 1.0}
        for i, u in enumerate(users)
    ]


def lengths(store: Store) -> list[int]:
    return [store.streams.length(s) for s in store.shards]


def test_too_many_events_is_422_and_nothing_is_written(url: str, store: Store):
    response = post(url, "/v1/events", {"events": events_of(["alice"] * 9)})
    assert response.status == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert "at most 8" in body["detail"] and "split it" in body["detail"]
    assert body["errors"] == [{"field": "events", "message": "must have at most 8 items, got 9"}]
    assert lengths(store) == [0, 0]


def test_a_body_over_the_byte_limit_is_413(url: str, store: Store):
    huge = {"events": [{**events_of(["alice"])[0], "context": {"note": "x" * 90}}] * 60}
    response = post(url, "/v1/events", huge)
    assert response.status == 413
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "FEDLEARN_MAX_BODY_BYTES" in response.json()["detail"]
    assert lengths(store) == [0, 0]


def test_a_chunked_body_over_the_limit_is_413_not_a_truncated_parse(url: str, store: Store):
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server learns the size by reading
        yield b'{"events": ['
        for event in events_of(["alice"] * 60):
            yield orjson.dumps(event) + b","
        yield orjson.dumps(events_of(["alice"], start=99)[0]) + b"]}"

    response = HTTP.request("POST", url + "/v1/events", body=chunks(), chunked=True)
    assert response.status == 413
    assert "4096 bytes" in response.json()["detail"]
    assert lengths(store) == [0, 0]


def test_too_many_rank_candidates_is_422(url: str, store: Store):
    items = [{"id": str(i)} for i in range(4)]
    response = post(url, "/v1/users/alice/rank", {"items": items})
    assert response.status == 422
    assert "at most 3" in response.json()["detail"]


def test_a_full_shard_answers_429_with_retry_after_and_writes_nothing(url: str, store: Store):
    (user,) = users_in(0, 1)
    assert post(url, "/v1/events", {"events": events_of([user] * MAXLEN)}).status == 202
    assert lengths(store)[0] == MAXLEN
    response = post(url, "/v1/events", {"events": events_of([user], start=MAXLEN)})
    assert response.status == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["accepted"] == 0 and body["not_written"] == [0]
    assert "shard(s) [0] is full" in body["detail"]
    assert lengths(store)[0] == MAXLEN
    # A resent event that is already in the stream is a duplicate, not a 429: nothing new.
    again = post(url, "/v1/events", {"events": events_of([user])})
    assert again.status == 202 and again.json() == {"accepted": 0, "duplicates": 1}


def test_a_batch_across_a_full_and_a_free_shard_says_what_was_written(url: str, store: Store):
    (full_user,) = users_in(0, 1)
    (free_user,) = users_in(1, 1)
    post(url, "/v1/events", {"events": events_of([full_user] * MAXLEN)})
    mixed = events_of([free_user, full_user, free_user], start=100)
    response = post(url, "/v1/events", {"events": mixed})
    assert response.status == 429
    body = response.json()
    assert body["accepted"] == 2 and body["duplicates"] == 0
    assert body["not_written"] == [1]
    assert lengths(store) == [MAXLEN, 2]
    # Resending the whole batch is safe: what was written counts as duplicates.
    retry = post(url, "/v1/events", {"events": mixed}).json()
    assert (retry["accepted"], retry["duplicates"], retry["not_written"]) == (0, 2, [1])
    assert lengths(store) == [MAXLEN, 2]


def test_redis_going_away_is_503_not_500(settings: Settings, tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as redis_server:
        store = Store(connect(redis_server.url, retries=0), N_SHARDS)  # fail fast
        store.bases.put_base("v1", BASE.to_bytes())
        store.bases.set_current("v1")
        with ThreadedServer(create_app(settings, store)) as server:
            ok = HTTP.request("GET", server.url + "/readyz")
            assert ok.status == 200
            redis_server.stop()
            for path in ("/readyz", "/v1/users/alice/model"):
                response = HTTP.request("GET", server.url + path)
                assert response.status == 503, path
                assert response.headers["Content-Type"] == "application/problem+json"
            assert HTTP.request("GET", server.url + "/healthz").status == 200
        store.close()
