"""Quotas under the production server: `fedlearn api` (gunicorn, 2 workers) on a real
redis-server. A user's rate limit holds across both workers (429 + Retry-After, nothing written
past it), admins are not limited, and gunicorn's own 414/431 answers are problem+json."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import urllib3

from fedlearn.api import issue_token
from fedlearn.config import load_settings
from fedlearn.devtools.embedded import free_port
from fedlearn.model import Base
from fedlearn.store import Store
from tests.live import Api, Service

SECRET = "gunicorn-quota-secret-0123456789"
N_SHARDS = 2
EVENTS_BURST, RANK_BURST = 10, 3
BASE = Base.fresh(["item=a"], 2, version="v1")


@pytest.fixture
def running(redis_url: str, tmp_path: Path) -> Iterator[tuple[Service, Api, Store]]:
    settings = load_settings(
        redis_url=redis_url, secret_key=SECRET, n_shards=N_SHARDS, data_dir=tmp_path / "data",
        api_port=free_port(), rate_events_per_s=0.01, rate_events_burst=EVENTS_BURST,
        rate_rank_per_s=0.01, rate_rank_burst=RANK_BURST,
    )  # fmt: skip
    (tmp_path / "logs").mkdir()
    service = Service(settings, tmp_path / "logs")
    with Store.from_url(redis_url, N_SHARDS) as store:
        store.bases.put_base(BASE.version, BASE.to_bytes(), {"generation": 0})
        store.bases.set_current(BASE.version)
        try:
            yield service, service.start_api(workers=2), store
        finally:
            service.stop_all()


def fresh_connection(url: str, token: str, method: str, path: str, json: dict | None = None):
    """Each request on its own connection, so the two workers share the requests."""
    return Api(url, token).call(method, path, json, headers={"Connection": "close"})


def test_a_users_rate_limit_holds_across_gunicorn_workers(running):
    service, api, store = running
    alice = issue_token(service.settings, user="alice").token

    def send(i: int):
        event = {"event_id": f"e{i}", "user": "alice", "item": "a", "signal": "skip", "ts": 1.0}
        return fresh_connection(api.url, alice, "POST", "/v1/events", {"events": [event]})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(40)))
    statuses = Counter(a.status for a in answers)
    assert statuses == {202: EVENTS_BURST, 429: 40 - EVENTS_BURST}, statuses
    assert sum(store.streams.length(s) for s in store.shards) == EVENTS_BURST
    refused = next(a for a in answers if a.status == 429)
    assert refused.headers["Content-Type"] == "application/problem+json"
    # the next event fits once one interval (100 s at 0.01/s) has passed, rounded up
    assert 95 <= int(refused.headers["Retry-After"]) <= math.ceil(1 / 0.01)
    body = refused.json()
    assert body["type"].endswith("/rate-limited") and "'alice'" in body["detail"]

    rank = {"items": [{"id": "a"}]}
    ranks = [
        fresh_connection(api.url, alice, "POST", "/v1/users/alice/rank", rank).status
        for _ in range(RANK_BURST + 2)
    ]
    assert ranks == [200] * RANK_BURST + [429, 429]

    admin = issue_token(service.settings, admin=True).token
    events = [
        {"event_id": f"adm{i}", "user": "alice", "item": "a", "signal": "skip", "ts": 1.0}
        for i in range(3 * EVENTS_BURST)
    ]
    assert fresh_connection(api.url, admin, "POST", "/v1/events", {"events": events}).status == 202


def test_a_batch_larger_than_the_burst_is_422_not_429(running):
    service, api, store = running
    alice = issue_token(service.settings, user="alice").token
    events = [
        {"event_id": f"e{i}", "user": "alice", "item": "a", "signal": "skip", "ts": 1.0}
        for i in range(EVENTS_BURST + 1)
    ]
    response = fresh_connection(api.url, alice, "POST", "/v1/events", {"events": events})
    assert response.status == 422
    assert "FEDLEARN_RATE_EVENTS_BURST" in response.json()["detail"]
    assert sum(store.streams.length(s) for s in store.shards) == 0


def raw_problem(response: urllib3.BaseHTTPResponse, status: int) -> dict:
    assert response.status == status, response.data[:300]
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    return body


def test_gunicorns_own_limit_answers_are_problem_json(running):
    _, api, _ = running
    http = urllib3.PoolManager(retries=False, timeout=10.0)
    long_url = api.url + "/v1/users/" + "u" * 5000 + "/model"
    body = raw_problem(http.request("GET", long_url), 414)
    assert "request line" in body["detail"] and "shorten the URL" in body["detail"]
    many = {f"X-Extra-{i}": "1" for i in range(150)}
    body = raw_problem(http.request("GET", api.url + "/healthz", headers=many), 431)
    assert "headers" in body["detail"]
    huge = {"X-Huge": "h" * 10_000}
    raw_problem(http.request("GET", api.url + "/healthz", headers=huge), 431)
    assert http.request("GET", api.url + "/healthz").status == 200  # the workers live on
