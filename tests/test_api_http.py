"""The API over real HTTP: gunicorn (2 workers, started as `fedlearn up` will) on a free port,
against the session's real redis-server. Every endpoint's happy path, validation, conditional
requests, de-duplication, metrics summed over workers, and the OpenAPI document."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from fedlearn.api import issue_token
from fedlearn.config import Settings, load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port
from fedlearn.model import Base, Clone, Delta
from fedlearn.model.gating import Gate
from fedlearn.store import Store
from fedlearn.store.items import Catalog
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.trainer import Trainer
from tests.live import Api, gunicorn_api

SECRET = "test-secret-key-0123456789abcdef"
N_SHARDS = 4
BASE = Base.fresh(["user=alice", "item=a", "item=b", "item=c", "genre=x"], 4, version="v1")


def problem(response: urllib3.BaseHTTPResponse, status: int) -> dict[str, Any]:
    """The problem+json body of an error answer, checking status and content type."""
    assert response.status == status, response.data[:500]
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


@pytest.fixture(scope="module")
def settings(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(
        redis_url=redis_server.url,
        secret_key=SECRET,
        n_shards=N_SHARDS,
        data_dir=tmp_path_factory.mktemp("api-data"),
        api_port=free_port(),
        api_workers=2,
        gate_blend=False,  # the gate as a switch (tests/test_serving_blend.py: the mixture)
    )


@pytest.fixture(scope="module")
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gunicorn with 2 workers via ``python -m fedlearn.api.server`` (run_gunicorn)."""
    with gunicorn_api(settings, tmp_path_factory.mktemp("gunicorn")) as (url, _log):
        yield url


@pytest.fixture
def store(redis_url: str, server: str) -> Iterator[Store]:
    """A clean database (the redis_url fixture flushes it) with base v1 published."""
    with Store.from_url(redis_url, N_SHARDS) as s:
        s.bases.put_base(BASE.version, BASE.to_bytes(), {"generation": 0})
        s.bases.set_current(BASE.version)
        yield s


@pytest.fixture
def admin(server: str, settings: Settings) -> Api:
    return Api(server, issue_token(settings, admin=True).token)


def event(i: int = 0, user: str = "alice", **changes: Any) -> dict[str, Any]:
    out = {"event_id": f"{user}-{i}", "user": user, "item": "a", "signal": "click", "ts": 1.7e9}
    out.update(changes)
    return out


def stream_total(store: Store) -> int:
    return sum(store.streams.length(shard) for shard in store.shards)


# --- ops ----------------------------------------------------------------------------------


def test_healthz_and_readyz(admin: Api, store: Store):
    assert admin.call("GET", "/healthz", token="").json() == {"status": "ok"}
    ready = admin.call("GET", "/readyz", token="")
    assert ready.status == 200
    assert ready.json() == {"status": "ready", "base_version": "v1", "n_shards": N_SHARDS}


def test_readyz_is_503_while_no_base_is_published(admin: Api, redis_url: str):
    body = problem(admin.call("GET", "/readyz", token=""), 503)
    assert "no base model is published" in body["detail"]


def test_unknown_routes_and_methods_are_problems(admin: Api, store: Store):
    problem(admin.call("GET", "/v1/nothing"), 404)
    body = problem(admin.call("PUT", "/v1/events", json={}), 405)
    assert body["type"].endswith("method-not-allowed")


# --- models and bases ---------------------------------------------------------------------


def test_a_user_without_a_delta_gets_an_empty_one(admin: Api, store: Store, settings: Settings):
    hyper = settings.clone_hyper(BASE.hyper)
    response = admin.call("GET", "/v1/users/alice/model")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body.pop("base_rows")["url"] == "/v1/base/v1/buckets/4/{bucket}"  # test_base_rows
    assert body == {
        "user": "alice",
        "base_version": "v1",
        "base_url": "/v1/base/v1",
        "delta": {"w0": 0.0, "features": [], "w": [], "v": []},
        "lr": pytest.approx(hyper["lr"]),
        "l2": hyper["l2"],
        "bias_lr": pytest.approx(hyper["bias_lr"]),
        "max_rows": hyper["max_rows"],
        "events_applied": 0,
        "last_event": None,
        "serve": "clone",
        "clone_weight": 1.0,
        "gate": {"loss_clone": 0.0, "loss_base": 0.0, "decay": settings.gate_decay,
                 "eta": settings.gate_eta, "blend": False},
    }  # fmt: skip


def test_the_base_is_immutable_and_revalidates_with_304(admin: Api, store: Store):
    response = admin.call("GET", "/v1/base/v1")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["ETag"] == '"v1"'
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert Base.from_bytes(response.data).features == BASE.features
    assert response.data == BASE.to_bytes()
    again = admin.call("GET", "/v1/base/v1", headers={"If-None-Match": '"v1"'})
    assert again.status == 304 and again.data == b""
    assert again.headers["ETag"] == '"v1"'
    other = admin.call("GET", "/v1/base/v1", headers={"If-None-Match": '"v0"'})
    assert other.status == 200 and other.data == BASE.to_bytes()


def test_current_base_redirects_to_its_versioned_url(admin: Api, store: Store):
    response = admin.call("GET", "/v1/base/current")
    assert response.status == 307
    assert response.headers["Location"] == "/v1/base/v1"
    assert response.json() == {"version": "v1", "url": "/v1/base/v1"}


def test_unknown_base_version_is_a_404_problem(admin: Api, store: Store):
    body = problem(admin.call("GET", "/v1/base/v9"), 404)
    assert "'v9' does not exist" in body["detail"]


def test_events_trained_by_a_trainer_show_in_the_model(admin: Api, store: Store):
    """POST /v1/events -> stream -> trainer -> delta -> GET model: one event's whole path."""
    events = [event(i, item=item) for i, item in enumerate(["a", "b", "a"])]
    assert admin.call("POST", "/v1/events", {"events": events}).status == 202
    trainer = Trainer(store, lambda base: CloneSettings(lr=0.1, l2=0.0, bias_lr=0.1))
    trainer.ownership.maintain()
    assert trainer.step() == 3
    model = admin.call("GET", "/v1/users/alice/model").json()
    assert model["events_applied"] == 3
    assert re.fullmatch(r"\d+-\d+", model["last_event"])
    assert set(model["delta"]["features"]) == {"user=alice", "item=a", "item=b"}
    delta = Delta.from_json(model["delta"], BASE.n_factors)
    stored = Delta.from_bytes(store.deltas.get(store.shard_of("alice"), "alice").delta)
    assert delta.w0 == pytest.approx(stored.w0)
    assert len(model["delta"]["v"][0]) == BASE.n_factors


def commit_delta(store: Store, user: str, *, generation: int = 0, gate: bytes = b"") -> Delta:
    """Write a trained delta for ``user`` the way a trainer does (lease + atomic commit)."""
    clone = Clone(BASE, lr=0.5)
    for _ in range(5):
        clone.learn_one({f"user={user}": 1.0, "item=a": 1.0}, 1)
    shard = store.shard_of(user)
    assert store.leases.acquire(shard, "test-trainer", 10_000)
    store.streams.commit_batch(
        shard, owner="test-trainer", deltas={user: clone.delta.to_bytes()},
        last_ids={user: "1-0"}, entry_ids=[], base=BASE.version, generation=generation,
        gates={user: gate},
    )  # fmt: skip
    store.leases.release(shard, "test-trainer")
    return clone.delta


def test_a_user_whose_gate_prefers_the_base_is_served_the_base(admin: Api, store: Store):
    delta = commit_delta(store, "alice", gate=Gate(loss_clone=9.0, loss_base=1.0).to_bytes())
    model = admin.call("GET", "/v1/users/alice/model").json()
    assert model["serve"] == "base"
    assert model["delta"]["features"] == delta.names  # the delta is still sent: it learns on
    ranked = admin.call("POST", "/v1/users/alice/rank", {"items": [{"id": "a"}]}).json()
    x = {"user=alice": 1.0, "item=a": 1.0}
    assert ranked["items"][0]["score"] == pytest.approx(Clone(BASE).predict_proba_one(x))
    assert Clone(BASE, delta).predict_proba_one(x) > ranked["items"][0]["score"] + 0.05


def test_a_user_whose_gate_prefers_the_clone_is_ranked_by_it(admin: Api, store: Store):
    delta = commit_delta(store, "alice", gate=Gate(loss_clone=1.0, loss_base=9.0).to_bytes())
    assert admin.call("GET", "/v1/users/alice/model").json()["serve"] == "clone"
    ranked = admin.call("POST", "/v1/users/alice/rank", {"items": [{"id": "a"}]}).json()
    x = {"user=alice": 1.0, "item=a": 1.0}
    assert ranked["items"][0]["score"] == pytest.approx(Clone(BASE, delta).predict_proba_one(x))


def test_a_delta_of_another_generation_is_not_served(admin: Api, store: Store):
    commit_delta(store, "alice", generation=7)
    model = admin.call("GET", "/v1/users/alice/model").json()
    assert model["delta"]["features"] == [] and model["events_applied"] == 0


def test_delete_forgets_the_users_clone(admin: Api, store: Store):
    admin.call("POST", "/v1/events", {"events": [event(0)]})
    trainer = Trainer(store, lambda base: CloneSettings(lr=0.1, l2=0.0, bias_lr=0.1))
    trainer.ownership.maintain()
    trainer.step()
    assert admin.call("GET", "/v1/users/alice/model").json()["events_applied"] == 1
    response = admin.call("DELETE", "/v1/users/alice")
    assert response.status == 204 and response.data == b""
    assert store.deltas.get(store.shard_of("alice"), "alice") is None
    assert admin.call("GET", "/v1/users/alice/model").json()["events_applied"] == 0


def test_items_lists_the_catalog(admin: Api, store: Store):
    assert admin.call("GET", "/v1/items").json() == {"items": []}
    Catalog(store.client).put_items(
        {"a": {"title": "Alpha", "features": {"genre=x": 1.0}}, "b": {"features": {}}}
    )
    items = admin.call("GET", "/v1/items?limit=5").json()["items"]
    assert sorted(items, key=lambda i: i["id"]) == [
        {"id": "a", "title": "Alpha", "features": {"genre=x": 1.0}},
        {"id": "b", "title": "b", "features": {}},
    ]
    assert len(admin.call("GET", "/v1/items?limit=1").json()["items"]) == 1
    body = problem(admin.call("GET", "/v1/items?limit=0"), 422)
    assert body["errors"][0]["field"] == "limit"


# --- events -------------------------------------------------------------------------------


def test_events_are_appended_and_a_retry_counts_duplicates(admin: Api, store: Store):
    batch = {"events": [event(0), event(1), event(0, user="bob"), event(1, user="carol")]}
    first = admin.call("POST", "/v1/events", batch)
    assert first.status == 202
    assert first.json() == {"accepted": 4, "duplicates": 0}
    assert stream_total(store) == 4
    again = admin.call("POST", "/v1/events", batch)
    assert again.json() == {"accepted": 0, "duplicates": 4}
    assert stream_total(store) == 4
    assert store.streams.length(store.shard_of("alice")) >= 2


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"signal": "clik"}, "events[1].signal", "must be 'click' or 'skip', got 'clik'"),
        ({"ts": "yesterday"}, "events[1].ts", "got 'yesterday'"),
        ({"ts": 1.7e12}, "events[1].ts", "milliseconds"),
        ({"ts": -1}, "events[1].ts", "greater than or equal to 0"),
        ({"user": ""}, "events[1].user", "at least 1 character"),
        ({"user": "x" * 129}, "events[1].user", "at most 128 characters"),
        ({"item": "a\nb"}, "events[1].item", "control characters"),
        ({"event_id": 7}, "events[1].event_id", "valid string"),
        ({"context": {"hour": [21]}}, "events[1].context.hour", "string, number or boolean"),
        ({"context": {"hour": None}}, "events[1].context.hour", "string, number or boolean"),
        ({"context": {"": 1}}, "events[1].context", "at least 1 character"),
        ({"context": "evening"}, "events[1].context", "valid dictionary"),
        ({"prediction_id": ""}, "events[1].prediction_id", "at least 1 character"),
        ({"signla": "click"}, "events[1].signla", "not a known field"),
    ],
)
def test_an_invalid_event_is_a_422_naming_it_and_nothing_is_written(
    admin: Api, store: Store, change: dict[str, Any], field: str, says: str
):
    batch = {"events": [event(0), {**event(1), **change}, event(2)]}
    body = problem(admin.call("POST", "/v1/events", batch), 422)
    assert body["type"].endswith("/validation")
    fields = {e["field"]: e["message"] for e in body["errors"]}
    assert field in fields, body
    assert says in fields[field]
    assert field in body["detail"] and "nothing was written" in body["detail"]
    assert stream_total(store) == 0


def test_a_missing_field_is_named(admin: Api, store: Store):
    incomplete = event(1)
    del incomplete["item"]
    body = problem(admin.call("POST", "/v1/events", {"events": [incomplete]}), 422)
    assert body["errors"] == [{"field": "events[0].item", "message": "is required"}]
    assert stream_total(store) == 0


@pytest.mark.parametrize(
    ("payload", "status", "says"),
    [
        (b'{"events": [', 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[1, 2]", 422, "must be a JSON object"),
        (b'{"events": []}', 422, "at least 1 item"),
        (b'{"events": [{"event_id": "e", "user": "u", "item": "i", "signal": "click",'
         b' "ts": NaN}]}', 400, "not valid JSON"),
    ],
)  # fmt: skip
def test_bodies_that_are_not_batches(
    admin: Api, store: Store, payload: bytes, status: int, says: str
):
    response = admin.call(
        "POST", "/v1/events", body=payload, headers={"Content-Type": "application/json"}
    )
    body = problem(response, status)
    assert says in body["detail"] or any(says in e["message"] for e in body.get("errors", []))
    assert stream_total(store) == 0


# --- ranking ------------------------------------------------------------------------------


def test_rank_scores_with_the_clone_and_records_what_it_saw(admin: Api, store: Store):
    request = {
        "items": [{"id": "a"}, {"id": "b", "features": {"genre=x": 1.0}}, {"id": "c"}],
        "context": {"hour": "21", "weekend": True},
    }
    response = admin.call("POST", "/v1/users/alice/rank", request)
    assert response.status == 200
    body = response.json()
    assert body["user"] == "alice" and body["base_version"] == "v1"
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert {item["id"] for item in body["items"]} == {"a", "b", "c"}
    assert all(0.0 < s < 1.0 for s in scores)
    shard = store.shard_of("alice")
    record = store.predictions.get_predictions(shard, [(body["prediction_id"], "alice")])
    seen = record[body["prediction_id"]]["items"]
    assert seen["b"]["features"] == {
        "user=alice": 1.0, "item=b": 1.0, "genre=x": 1.0, "hour=21": 1.0, "weekend": 1.0,
    }  # fmt: skip
    assert seen["a"]["score"] == pytest.approx(
        next(i["score"] for i in body["items"] if i["id"] == "a")
    )
    top = admin.call("POST", "/v1/users/alice/rank", {**request, "k": 1}).json()
    assert [i["id"] for i in top["items"]] == [body["items"][0]["id"]]
    assert top["prediction_id"] != body["prediction_id"]


def test_rank_uses_catalog_features_when_the_request_has_none(admin: Api, store: Store):
    Catalog(store.client).put_items({"c": {"features": {"genre=x": 1.0}}})
    body = admin.call("POST", "/v1/users/alice/rank", {"items": [{"id": "c"}]}).json()
    record = store.predictions.get_predictions(
        store.shard_of("alice"), [(body["prediction_id"], "alice")]
    )
    assert record[body["prediction_id"]]["items"]["c"]["features"] == {
        "user=alice": 1.0, "item=c": 1.0, "genre=x": 1.0,
    }  # fmt: skip


def test_rank_validation_names_the_field(admin: Api, store: Store):
    body = problem(
        admin.call("POST", "/v1/users/alice/rank", {"items": [{"id": "a", "features": {"": 1}}]}),
        422,
    )
    assert body["errors"][0]["field"] == "items[0].features"
    body = problem(admin.call("POST", "/v1/users/alice/rank", {"items": [], "k": 0}), 422)
    assert {e["field"] for e in body["errors"]} == {"items", "k"}


def test_rank_without_a_base_is_503(admin: Api, redis_url: str):
    body = problem(admin.call("POST", "/v1/users/alice/rank", {"items": [{"id": "a"}]}), 503)
    assert "no base model" in body["detail"]


# --- tokens, metrics, OpenAPI -------------------------------------------------------------


def test_admin_issues_user_tokens_that_work_for_that_user_only(admin: Api, store: Store):
    response = admin.call("POST", "/v1/tokens", {"user": "alice", "ttl_s": 60})
    assert response.status == 201
    issued = response.json()
    assert issued["sub"] == "alice" and issued["role"] == "user"
    assert time.time() < issued["expires_at"] <= time.time() + 61
    alice = Api(admin.url, issued["token"])
    assert alice.call("GET", "/v1/users/alice/model").status == 200
    problem(alice.call("GET", "/v1/users/bob/model"), 403)
    problem(alice.call("POST", "/v1/tokens", {"user": "alice"}), 403)


def metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_events_and_requests_over_all_workers(admin: Api, store: Store):
    before = admin.call("GET", "/metrics", token="").data.decode()
    admin.call("POST", "/v1/events", {"events": [event(0), event(1)]})
    admin.call("POST", "/v1/events", {"events": [event(0), event(2)]})
    admin.call("POST", "/v1/events", {"events": [{**event(3), "signal": "x"}]})
    for _ in range(6):  # several requests, so both workers answer some
        admin.call("GET", "/healthz")
    after = admin.call("GET", "/metrics", token="")
    assert after.headers["Content-Type"].startswith("text/plain")
    text = after.data.decode()

    def grew(name: str, labels: str = "") -> float:
        return metric(text, name, labels) - metric(before, name, labels)

    assert grew("fedlearn_events_accepted_total") == 3
    assert grew("fedlearn_events_duplicates_total") == 1
    assert grew("fedlearn_events_rejected_total", '{reason="invalid"}') == 1
    requests = '{method="GET",route="/healthz",status="200"}'
    assert grew("fedlearn_http_requests_total", requests) >= 6
    assert "fedlearn_http_request_duration_seconds_bucket" in text


def test_openapi_is_valid_3_1_and_lists_every_route(admin: Api, store: Store, settings: Settings):
    from openapi_spec_validator import validate

    from fedlearn.api import create_app

    document = admin.call("GET", "/openapi.json", token="").json()
    assert document["openapi"] == "3.1.0"
    validate(document)
    app = create_app(settings, store)
    routes = {
        (re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if not rule.endpoint.startswith(("web.", "web_dashboard.", "web_docs."))  # static pages
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert routes == documented
    assert len(routes) == 20  # 18, and the 2 routes of partial bases (routes_baserows)
    events = document["components"]["schemas"]["EventBatch"]["properties"]["events"]
    assert events["maxItems"] == settings.max_events_per_request
    post_events = document["paths"]["/v1/events"]["post"]["responses"]
    assert {"202", "401", "403", "413", "422", "429"} <= post_events.keys()
    assert "application/problem+json" in post_events["422"]["content"]
