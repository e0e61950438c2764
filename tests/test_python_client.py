"""The Python client (``fedlearn.client``) against a real ``fedlearn up --demo`` (auth on), in
the scenarios of the JavaScript client's tests: a session start fetches the model with the
token and the base once per version; errors name the request and carry the problem and its
request id; ranking; events retried with the same ids are counted once, a 429 waits what
Retry-After says; admin calls. The same service shows that ``up`` exposes every trainer's
metrics (service.json, prometheus-targets.json)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
import urllib3

from fedlearn.aggregate.round import TERMINAL
from fedlearn.api import issue_token
from fedlearn.client import ApiError, Client, ClientError, Event
from fedlearn.client.client import ROUND_ENDED
from fedlearn.config import load_settings, read_secret_key
from fedlearn.devtools.embedded import free_port
from fedlearn.devtools.runtime import read_runtime
from fedlearn.devtools.supervisor import TARGETS_FILE
from tests.live import UpService, running_up, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
BURST = 40  # the events a user may send at once here (FEDLEARN_RATE_EVENTS_BURST)
ITEMS = [str(i) for i in range(1, 9)]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpService]:
    folder = tmp_path_factory.mktemp("fedlearn-up")
    env = {"FEDLEARN_RATE_EVENTS_BURST": str(BURST), "FEDLEARN_RATE_EVENTS_PER_S": "20"}
    with running_up(folder, free_port(), env) as service:
        yield service


@pytest.fixture(scope="module")
def admin_token(service: UpService) -> str:
    secret = read_secret_key(service.data_dir)
    return issue_token(load_settings(secret_key=secret), admin=True).token


class Sleeps(list[float]):
    """The client's sleep seam: records each wait, and waits (the server's clock is real)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(seconds)


def events(user: str, n: int, signal: str = "click") -> list[Event]:
    return [Event(user, ITEMS[i % len(ITEMS)], signal, ts=1.7e9 + i) for i in range(n)]  # type: ignore[arg-type]


def test_a_session_fetches_the_model_and_the_base_once_per_version(service: UpService) -> None:
    client = Client(service.api_url, service.token)
    first = client.start_session("demo-user")
    assert first.user == "demo-user" and first.model["serve"] == "clone"
    assert first.base_downloaded and first.base.version == first.base_version
    again = client.start_session("demo-user")
    assert not again.base_downloaded and again.base is first.base  # a 304 kept the copy


def test_a_refused_start_names_the_request_and_carries_the_problem(service: UpService) -> None:
    client = Client(service.api_url, "not-a-token")
    with pytest.raises(ApiError) as caught:
        client.start_session("demo-user")
    error = caught.value
    assert error.status == 401 and error.problem["type"].endswith("/unauthorized")
    assert error.request_id and error.problem["request_id"] == error.request_id
    assert "GET /v1/users/demo-user/model answered 401" in str(error)
    with pytest.raises(ApiError) as other:  # a user token acts for its user only
        Client(service.api_url, service.token).start_session("someone-else")
    assert other.value.status == 403


def test_rank_orders_items_best_first_and_events_carry_its_prediction_id(
    service: UpService,
) -> None:
    client = Client(service.api_url, service.token)
    ranking = client.rank("demo-user", ITEMS, context={"hour=21": 1}, k=5)
    scores = [score for _, score in ranking.items]
    assert len(ranking.items) == 5 and scores == sorted(scores, reverse=True)
    assert all(0 < s < 1 for s in scores)
    best = ranking.items[0][0]
    sent = client.click("demo-user", best, prediction_id=ranking.prediction_id)
    assert sent == {"accepted": 1, "duplicates": 0}
    with pytest.raises(ApiError) as caught:  # a 422 is final: not retried
        client.rank("demo-user", [])
    assert caught.value.status == 422 and caught.value.problem["errors"]


def test_rank_explores_within_the_limits_and_names_the_limit_beyond_them(
    service: UpService,
) -> None:
    client = Client(service.api_url, service.token)
    ranking = client.rank("demo-user", ITEMS, policy={"kind": "epsilon", "epsilon": 0.2}, k=3)
    assert ranking.policy == {"kind": "epsilon", "epsilon": 0.2}
    assert len(ranking.propensities) == 3 and all(0 < p <= 1 for p in ranking.propensities)
    assert client.rank("demo-user", ITEMS).propensities == [1.0] * len(ITEMS)  # greedy
    with pytest.raises(ApiError) as caught:
        client.rank("demo-user", ITEMS, policy={"kind": "epsilon", "epsilon": 0.9})
    assert caught.value.status == 422
    assert "FEDLEARN_EXPLORE_MAX_EPSILON" in caught.value.problem["detail"]
    shown = Event("demo-user", ITEMS[0], "click", propensity=0.5, slot=1, policy=ranking.policy)
    assert client.send_events([shown]) == {"accepted": 1, "duplicates": 0}


def test_a_batch_sent_again_is_counted_once_and_trained_once(
    service: UpService, admin_token: str
) -> None:
    user = "client-retry"
    client = Client(service.api_url, issue_user_token(service, admin_token, user))
    batch = events(user, 6) + events(user, 4, "skip")[:4]
    batch = [Event(e.user, e.item, e.signal, ts=e.ts + j) for j, e in enumerate(batch)]
    assert client.send_events(batch) == {"accepted": 10, "duplicates": 0}
    # What a retry after a lost answer sends: the same events, the same ids.
    assert client.send_events(batch) == {"accepted": 0, "duplicates": 10}
    wait_for(lambda: client.start_session(user).events_applied == 10, 30, "10 events applied")
    time.sleep(0.5)
    assert client.start_session(user).events_applied == 10


def test_a_429_waits_what_retry_after_says_then_gets_through(
    service: UpService, admin_token: str
) -> None:
    user = "client-burst"
    sleeps = Sleeps()
    client = Client(service.api_url, issue_user_token(service, admin_token, user), sleep=sleeps)
    assert client.send_events(events(user, BURST)) == {"accepted": BURST, "duplicates": 0}
    # The burst is spent: the next batch is refused (429, Retry-After), waited for, resent.
    more = [Event(user, "1", "click", ts=1.8e9 + i) for i in range(10)]
    assert client.send_events(more) == {"accepted": 10, "duplicates": 0}
    assert sleeps and all(s >= 1 for s in sleeps)  # Retry-After is whole seconds


def test_no_answer_is_retried_with_backoff_then_reported() -> None:
    sleeps: list[float] = []
    client = Client(
        f"http://127.0.0.1:{free_port()}", "t", retries=3, backoff_s=0.1, sleep=sleeps.append
    )
    with pytest.raises(ClientError, match="no answer after 4 attempts"):
        client.send_events(events("u", 1))
    assert len(sleeps) == 3 and sleeps[0] <= 0.1 and sleeps[2] <= 0.4 and sleeps[2] > 0.1
    with pytest.raises(ValueError, match="http:// or https://"):
        Client("localhost:8000")


def test_admin_calls_issue_tokens_and_forget_users(service: UpService, admin_token: str) -> None:
    admin = Client(service.api_url, admin_token)
    user = "client-forget"
    client = Client(service.api_url, admin.issue_token(user, ttl_s=600))
    client.send_events(events(user, 3))
    wait_for(lambda: client.start_session(user).events_applied == 3, 30, "3 events applied")
    admin.forget_user(user)
    with pytest.raises(ApiError) as caught:  # forgetting revokes the user's earlier tokens
        client.start_session(user)
    assert caught.value.status == 401
    fresh = Client(service.api_url, admin.issue_token(user))
    wait_for(lambda: fresh.start_session(user).events_applied == 0, 30, "the clone forgotten")
    assert admin.ready()["status"] == "ready"
    with pytest.raises(ApiError) as refused:  # a user token is no admin
        client.issue_token("someone")
    assert refused.value.status in (401, 403)


def test_the_client_knows_which_round_statuses_are_final() -> None:
    assert {str(s) for s in TERMINAL} == ROUND_ENDED


def test_up_exposes_every_trainer_s_metrics(service: UpService) -> None:
    runtime = read_runtime(service.data_dir)
    assert runtime is not None
    urls = runtime["metrics"]
    assert set(urls) == {"api", "trainer-0"}
    http = urllib3.PoolManager(retries=False, timeout=5)
    text = http.request("GET", urls["trainer-0"]).data.decode()
    assert "fedlearn_events_applied_total" in text and "fedlearn_freshness_seconds_bucket" in text
    targets = orjson.loads((service.data_dir / TARGETS_FILE).read_bytes())
    scraped = {g["labels"]["part"]: g["targets"][0] for g in targets}
    assert {f"http://{t}/metrics" for t in scraped.values()} == set(urls.values())


def issue_user_token(service: UpService, admin_token: str, user: str) -> str:
    return Client(service.api_url, admin_token).issue_token(user)
