"""Bearer tokens over real HTTP (werkzeug in a thread, real Redis): who may do what, and the
answers when the token is missing, malformed, forged, expired or someone else's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import urllib3
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from fedlearn.api import create_app, issue_token, verify_token
from fedlearn.api.auth import SALT
from fedlearn.api.errors import Unauthorized
from fedlearn.api.server import ThreadedServer
from fedlearn.config import ConfigError, Settings, load_settings
from fedlearn.model import Base
from fedlearn.store import Store

KEY = "current-key-0123456789abcdef"
OLD_KEY = "retired-key-0123456789abcdef"
BASE = Base.fresh(["item=a"], 2, version="v1")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings(
        secret_key=KEY, previous_secret_keys=[OLD_KEY], n_shards=2, data_dir=tmp_path
    )


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    with Store.from_url(redis_url, 2) as s:
        s.bases.put_base("v1", BASE.to_bytes())
        s.bases.set_current("v1")
        yield s


HTTP = urllib3.PoolManager(retries=False, timeout=30.0)


def call(url: str, method: str, path: str, token: str | None = None, json: Any = None,
         authorization: str | None = None) -> urllib3.BaseHTTPResponse:  # fmt: skip
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if authorization is not None:
        headers["Authorization"] = authorization
    body = orjson.dumps(json) if json is not None else None
    return HTTP.request(method, url + path, body=body, headers=headers, redirect=False)


def unauthorized(response: urllib3.BaseHTTPResponse, says: str) -> None:
    assert response.status == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="fedlearn"')
    assert says in response.json()["detail"]


def signed(claims: dict[str, Any], key: str = KEY) -> str:
    return URLSafeTimedSerializer([key], salt=SALT).dumps(claims)


def test_a_missing_token_is_401_saying_so(url: str):
    unauthorized(call(url, "GET", "/v1/users/alice/model"), "missing bearer token")
    unauthorized(call(url, "POST", "/v1/events", json={"events": []}), "missing bearer token")


def test_a_header_that_is_not_bearer_is_401(url: str):
    response = call(url, "GET", "/v1/users/alice/model", authorization="Basic YWxpY2U6eA==")
    unauthorized(response, "must be 'Bearer <token>'")


def test_a_forged_or_truncated_token_is_401_invalid(url: str, settings: Settings):
    good = issue_token(settings, user="alice").token
    unauthorized(call(url, "GET", "/v1/users/alice/model", token=good[:-3]), "invalid")
    forged = signed({"sub": "alice", "role": "admin", "exp": 2**40}, key="someone-elses-key-123")
    unauthorized(call(url, "GET", "/v1/users/alice/model", token=forged), "bad signature")


def test_an_expired_token_is_401_expired(url: str):
    expired = signed({"sub": "alice", "role": "user", "exp": int(time.time()) - 5})
    unauthorized(call(url, "GET", "/v1/users/alice/model", token=expired), "expired")


def test_a_token_older_than_the_longest_lifetime_is_401_expired(url: str, settings: Settings):
    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - settings.max_token_ttl_s - 10

    serializer = URLSafeTimedSerializer([KEY], salt=SALT, signer=Backdated)
    old = serializer.dumps({"sub": "alice", "role": "user", "exp": 2**40})
    unauthorized(call(url, "GET", "/v1/users/alice/model", token=old), "expired")


def test_malformed_claims_are_401(url: str):
    for claims in ({"sub": "alice"}, {"sub": "alice", "role": "root", "exp": 2**40}, [1, 2]):
        response = call(url, "GET", "/v1/users/alice/model", token=signed(claims))  # type: ignore[arg-type]
        unauthorized(response, "invalid")


def test_a_user_token_acts_on_its_own_user_only(url: str, settings: Settings, store: Store):
    alice = issue_token(settings, user="alice").token
    assert call(url, "GET", "/v1/users/alice/model", token=alice).status == 200
    rank = {"items": [{"id": "a"}]}
    assert call(url, "POST", "/v1/users/alice/rank", token=alice, json=rank).status == 200
    for method, path, body in [
        ("GET", "/v1/users/bob/model", None),
        ("POST", "/v1/users/bob/rank", rank),
        ("DELETE", "/v1/users/bob", None),
        ("POST", "/v1/tokens", {"user": "alice"}),
    ]:
        response = call(url, method, path, token=alice, json=body)
        assert response.status == 403, (method, path)
        assert response.headers["Content-Type"] == "application/problem+json"
        assert "alice" in response.json()["detail"]
    assert call(url, "DELETE", "/v1/users/alice", token=alice).status == 204


def test_a_user_token_may_send_only_its_own_events(url: str, settings: Settings, store: Store):
    alice = issue_token(settings, user="alice").token
    own = {"event_id": "e1", "user": "alice", "item": "a", "signal": "skip", "ts": 1.0}
    other = {**own, "event_id": "e2", "user": "bob"}
    response = call(url, "POST", "/v1/events", token=alice, json={"events": [own, other]})
    assert response.status == 403
    assert response.json()["errors"] == [
        {"field": "events[1].user", "message": "not the token's user"}
    ]
    assert sum(store.streams.length(s) for s in store.shards) == 0
    accepted = call(url, "POST", "/v1/events", token=alice, json={"events": [own]})
    assert accepted.status == 202 and accepted.json() == {"accepted": 1, "duplicates": 0}


def test_an_admin_token_may_act_on_anyone(url: str, settings: Settings, store: Store):
    admin = issue_token(settings, admin=True).token
    assert call(url, "GET", "/v1/users/bob/model", token=admin).status == 200
    events = {"events": [{"event_id": "e", "user": "bob", "item": "a", "signal": "click",
                          "ts": 1.0}]}  # fmt: skip
    assert call(url, "POST", "/v1/events", token=admin, json=events).status == 202
    made = call(url, "POST", "/v1/tokens", token=admin, json={"admin": True, "ttl_s": 30})
    assert made.status == 201 and made.json()["role"] == "admin"
    principal = verify_token(settings, made.json()["token"])
    assert principal.is_admin


def test_token_requests_are_validated(url: str, settings: Settings):
    admin = issue_token(settings, admin=True).token
    for body, field in [
        ({}, "user"),
        ({"user": "alice", "admin": True}, "user"),
        ({"user": "alice", "ttl_s": settings.max_token_ttl_s + 1}, "ttl_s"),
        ({"user": "alice", "ttl_s": 0}, "ttl_s"),
    ]:
        response = call(url, "POST", "/v1/tokens", token=admin, json=body)
        assert response.status == 422, body
        assert response.json()["errors"][0]["field"] == field


def test_keys_rotate_old_tokens_stay_valid_until_the_key_is_dropped(settings: Settings):
    old = signed({"sub": "alice", "role": "user", "exp": int(time.time()) + 60}, key=OLD_KEY)
    assert verify_token(settings, old).sub == "alice"
    fresh = issue_token(settings, user="alice").token
    # New tokens are signed with the current key: a server knowing only it accepts them.
    only_current = settings.model_copy(update={"previous_secret_keys": []})
    assert verify_token(only_current, fresh).sub == "alice"
    with pytest.raises(Unauthorized, match="bad signature"):
        verify_token(only_current, old)


def test_auth_off_lets_every_request_act_as_admin(store: Store, tmp_path):
    settings = load_settings(auth=False, n_shards=2, data_dir=tmp_path)
    with ThreadedServer(create_app(settings, store)) as server:
        assert call(server.url, "GET", "/v1/users/anyone/model").status == 200


def test_auth_on_without_a_key_refuses_to_start(store: Store, tmp_path):
    settings = load_settings(n_shards=2, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="FEDLEARN_SECRET_KEY is not set"):
        create_app(settings, store)


def test_issue_token_checks_its_arguments(settings: Settings):
    with pytest.raises(ValueError, match="either user"):
        issue_token(settings, user="alice", admin=True)
    with pytest.raises(ValueError, match="user must be"):
        issue_token(settings, user="")
    with pytest.raises(ValueError, match="control characters"):
        issue_token(settings, user="a\tb")
    with pytest.raises(ValueError, match="exceeds the maximum"):
        issue_token(settings, user="alice", ttl_s=settings.max_token_ttl_s + 1)
    issued = issue_token(settings, user="alice", ttl_s=10)
    assert issued.expires_at - time.time() <= 10
    assert verify_token(settings, issued.token, now=issued.expires_at - 1).sub == "alice"
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(settings, issued.token, now=issued.expires_at)
