"""The admin endpoints of aggregation and rollback, through Flask's test client on a real Redis.

No Celery worker runs here: a started round waits in the broker queue, and the test finishes it
with the same steps the workers run, to read its result back over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from fedlearn.aggregate.mapper import map_shard
from fedlearn.aggregate.run import begin_round, promote_round, reduce_round, rounds_of
from fedlearn.aggregate.synthetic import publish, write_deltas
from fedlearn.api import issue_token
from fedlearn.api.app import create_app
from fedlearn.config import load_settings
from fedlearn.model import Base, Delta
from fedlearn.store import Store

SECRET = "test-secret-key-0123456789abcdef"


def make_app(store: Store, redis_url: str, *, auth: bool) -> Flask:
    settings = load_settings(
        redis_url=redis_url, n_shards=store.n_shards, auth=auth, secret_key=SECRET
    )
    app = create_app(settings, store)
    assert "aggregations" in app.blueprints  # routes_aggregations is one of the app's
    return app


@pytest.fixture
def client(store: Store, redis_url: str) -> Iterator[FlaskClient]:
    base = Base.fresh(["item=a"], 2, version="1")
    publish(store, base)
    with make_app(store, redis_url, auth=False).test_client() as c:
        yield c


def test_start_a_round_then_read_its_result(client: FlaskClient, store: Store) -> None:
    d = Delta(2)
    (r,) = d.rows_of(["item=a"])
    d._w[r], d.n_events = 1.5, 3
    write_deltas(store, {"u1": d}, base="1")
    reply = client.post("/v1/aggregations", json={"min_users": 1})
    assert reply.status_code == 202, reply.json
    round_id = reply.json["id"]
    assert reply.headers["Location"] == reply.json["url"] == f"/v1/aggregations/{round_id}"
    assert client.get(reply.json["url"]).json["status"] == "queued"
    rounds = rounds_of(store)
    assert begin_round(store, rounds, round_id)  # what the workers do
    busy = client.post("/v1/aggregations", data=b"")
    assert busy.status_code == 409 and busy.json["running"] == round_id
    for shard in store.shards:
        map_shard(store, rounds, round_id, shard)
    reduce_round(store, rounds, round_id)
    promote_round(store, rounds, round_id)
    record = client.get(f"/v1/aggregations/{round_id}").json
    assert record["status"] == "done" and record["base"] == "1" and record["new_version"] == "2"
    assert record["result"]["users"] == 1 and record["config"]["min_users"] == 1
    assert store.bases.current_version() == "2"


def test_bad_requests_name_the_problem(client: FlaskClient) -> None:
    reply = client.post("/v1/aggregations", json={"strategy": "krum"})
    assert reply.status_code == 422 and reply.json["errors"][0]["field"] == "strategy"
    reply = client.post("/v1/aggregations", json={"min_user": 1})
    assert reply.status_code == 422 and "min_user" in reply.json["detail"]
    reply = client.get("/v1/aggregations/nope")
    assert reply.status_code == 404
    assert reply.headers["Content-Type"] == "application/problem+json"
    reply = client.get("/v1/aggregations/no%20spaces")
    assert reply.status_code == 422 and reply.json["errors"][0]["field"] == "round_id"


def test_rollback(client: FlaskClient, store: Store) -> None:
    store.bases.put_base("2", Base.fresh(["item=b"], 2, version="2").to_bytes(), {})
    store.bases.set_current("2")
    reply = client.post("/v1/base/rollback", json={"version": "1"})
    assert reply.status_code == 200 and reply.json == {"version": "1", "previous": "2"}
    assert store.bases.current_version() == "1"
    reply = client.post("/v1/base/rollback", json={"version": "9"})
    assert reply.status_code == 404 and "'9'" in reply.json["detail"]
    assert store.bases.current_version() == "1"


def test_only_admins_may(store: Store, redis_url: str) -> None:
    app = make_app(store, redis_url, auth=True)
    settings = app.extensions["fedlearn"].settings
    user = issue_token(settings, user="u1").token
    admin = issue_token(settings, admin=True).token
    with app.test_client() as c:
        for method, path, body in (
            ("POST", "/v1/aggregations", {}),
            ("GET", "/v1/aggregations/r1", None),
            ("POST", "/v1/base/rollback", {"version": "1"}),
        ):
            reply = c.open(path, method=method, data=orjson.dumps(body) if body is not None
                           else None, headers={"Authorization": f"Bearer {user}"})  # fmt: skip
            assert reply.status_code == 403, path
        reply = c.get("/v1/aggregations/r1", headers={"Authorization": f"Bearer {admin}"})
        assert reply.status_code == 404


def test_readyz_is_503_when_the_current_base_cannot_serve(
    client: FlaskClient, store: Store
) -> None:
    assert client.get("/readyz").status_code == 200
    good = Base.fresh(["item=a"], 2, version="1")
    w = good.w.copy()
    w[0] = float("nan")  # what an unchecked round used to publish
    store.bases.put_base("2", Base(good.features, 0.0, w, good.v, version="2").to_bytes(), {})
    store.bases.set_current("2")
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.mimetype == "application/problem+json"
    assert "current base '2' cannot be served" in answer.get_json()["detail"]
    store.bases.put_base("3", b"FLFM-truncated", {})  # bytes that do not load
    store.bases.set_current("3")
    assert "base '3'" in client.get("/readyz").get_json()["detail"]
    store.bases.rollback("1")
    assert client.get("/readyz").status_code == 200
