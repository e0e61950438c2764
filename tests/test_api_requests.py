"""What every request gets, over real HTTP (gunicorn, 2 workers, the session's redis-server):
CORS for the allowed origins only (preflight with ``Authorization``), a request id echoed in the
``X-Request-ID`` header and in problem+json, and one JSON access-log line per request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fedlearn.api import issue_token
from fedlearn.config import ConfigError, Settings, load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port
from fedlearn.model import Base
from fedlearn.store import Store
from tests.live import Api, gunicorn_api

SECRET = "test-secret-key-0123456789abcdef"
PAGE = "http://127.0.0.1:5999"  # the origin of a page served elsewhere
OTHER = "http://evil.example"
BASE = Base.fresh(["user=alice", "item=a"], 2, version="v1")


@pytest.fixture(scope="module")
def settings(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(
        redis_url=redis_server.url,
        secret_key=SECRET,
        n_shards=2,
        data_dir=tmp_path_factory.mktemp("api-data"),
        api_port=free_port(),
        cors_origins=[PAGE],
        log_format="json",
    )


@pytest.fixture(scope="module")
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The server's log file, while it runs."""
    with gunicorn_api(settings, tmp_path_factory.mktemp("gunicorn")) as (_url, log):
        yield log


@pytest.fixture
def api(redis_url: str, server: Path, settings: Settings) -> Api:
    with Store.from_url(redis_url, 2) as store:
        store.bases.put_base(BASE.version, BASE.to_bytes(), {"generation": 0})
        store.bases.set_current(BASE.version)
    return Api(f"http://127.0.0.1:{settings.api_port}", issue_token(settings, "alice").token)


def test_a_preflight_from_an_allowed_origin_allows_the_bearer_token(api: Api) -> None:
    answer = api.call(
        "OPTIONS",
        "/v1/events",
        token="",
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == PAGE
    allowed = answer.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in answer.headers  # tokens, never cookies


def test_answers_to_an_allowed_origin_expose_etag_and_retry_after(api: Api) -> None:
    answer = api.call("GET", "/v1/base/v1", headers={"Origin": PAGE})
    assert answer.status == 200 and answer.headers["ETag"]
    assert answer.headers["Access-Control-Allow-Origin"] == PAGE
    exposed = answer.headers["Access-Control-Expose-Headers"].lower()
    assert {"etag", "retry-after", "x-request-id"} <= set(map(str.strip, exposed.split(",")))


def test_other_origins_get_no_cors_headers(api: Api) -> None:
    for method in ("OPTIONS", "GET"):
        answer = api.call(
            method,
            "/v1/base/v1",
            headers={"Origin": OTHER, "Access-Control-Request-Method": "GET"},
        )
        assert "Access-Control-Allow-Origin" not in answer.headers, method


def test_an_error_carries_the_request_id_of_its_header_and_cors(api: Api) -> None:
    answer = api.call("GET", "/v1/users/alice/model", token="wrong", headers={"Origin": PAGE})
    assert answer.status == 401
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.headers["Access-Control-Allow-Origin"] == PAGE  # the page can read the error
    rid = answer.headers["X-Request-ID"]
    assert len(rid) == 32 and answer.json()["request_id"] == rid


def test_a_plausible_caller_request_id_is_kept_and_a_bad_one_replaced(api: Api) -> None:
    mine = "client-7f3a9c1e-0001"
    assert (
        api.call("GET", "/healthz", headers={"X-Request-ID": mine}).headers["X-Request-ID"] == mine
    )
    forged = api.call("GET", "/healthz", headers={"X-Request-ID": "a b\tc"})
    assert forged.headers["X-Request-ID"] != "a b\tc"


def test_each_request_writes_one_json_access_line_without_its_query(api: Api, server: Path) -> None:
    rid = "access-log-test-000042"
    api.call("GET", "/v1/users/alice/model?token=secret-in-query", headers={"X-Request-ID": rid})
    lines = [orjson.loads(line) for line in server.read_text().splitlines() if line.startswith("{")]
    ours = [line for line in lines if line.get("request_id") == rid]
    assert len(ours) == 1, lines[-5:]
    line = ours[0]
    assert line["logger"] == "fedlearn.access" and line["level"] == "INFO"
    assert line["method"] == "GET" and line["path"] == "/v1/users/alice/model"
    assert line["route"] == "/v1/users/<user>/model" and line["status"] == 200
    assert line["duration_ms"] >= 0
    assert "secret-in-query" not in server.read_text()
    assert any(entry["logger"].startswith("gunicorn") for entry in lines)  # its lines too


@pytest.mark.parametrize(
    "origins", ['["http://a.example/"]', '["a.example"]', '["https://a.example/path"]']
)
def test_an_origin_that_is_no_origin_is_refused_naming_the_setting(
    origins: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDLEARN_CORS_ORIGINS", origins)
    with pytest.raises(ConfigError, match=r"FEDLEARN_CORS_ORIGINS.*scheme://host"):
        load_settings()


def test_the_docs_page_and_only_its_files_are_served(api: Api) -> None:
    page = api.call("GET", "/docs", token="")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert api.call("GET", "/docs/vendor/swagger-ui-bundle.js", token="").status == 200
    for name in ("vendor/swagger-ui.LICENSE", "../routes_docs.py", "docs.html"):
        refused = api.call("GET", f"/docs/{name}", token="")
        assert refused.status == 404, name
        assert refused.headers["Content-Type"] == "application/problem+json"
