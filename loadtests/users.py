"""The simulated users of the load test: visitors' browser tabs, the operator, the probe.

See ``locustfile.py`` for what each one does and how the run is judged. They share one
:class:`Shared` per locust process (the population, the tally, the users' tokens), which the
locustfile's init listener creates from the command line before any user starts.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
import uuid
from typing import Any, ClassVar

import gevent
import gevent.event
import gevent.pool
from geventhttpclient.response import HTTPConnectionClosed
from locust import FastHttpUser, tag
from locust.exception import StopUser
from workload import Pacer, Population, Tally

log = logging.getLogger("fedlearn.loadtest")

MODEL = "/v1/users/[user]/model"
ROUND_DONE = frozenset({"done", "skipped", "failed", "abandoned", "rejected"})
# No answer because the connection was closed under the request: safe to resend once.
RESENDABLE = (HTTPConnectionClosed, ConnectionResetError, BrokenPipeError)
# The freshness probe sends a poll every POLL_S without waiting for the previous answer (at
# most POLLS_IN_FLIGHT at once), so its reading is bounded by the service's latency, not by a
# polling loop's period plus one request's time per turn.
POLL_S = 0.002
POLLS_IN_FLIGHT = 8


def why(answer: Any) -> str:
    """What went wrong with a request, for locust's failure report."""
    if not answer.status_code:  # no answer at all: the connection failed
        error = getattr(answer, "error", None)
        return f"no answer ({type(error).__name__}: {error})"
    return f"{answer.status_code} {(answer.text or '')[:200]}"


class Shared:
    """What the simulated users of this locust process share."""

    def __init__(self, options: Any) -> None:
        prefix = options.user_prefix or f"lt{uuid.uuid4().hex[:8]}"
        self.options = options
        self.population = Population(options.population, options.zipf, prefix)
        self.tally = Tally(prefix)
        self.admin = (
            {"Authorization": f"Bearer {options.admin_token}"} if options.admin_token else {}
        )
        self.tokens: dict[str, str] = {}
        # --rate: every request of the session users waits for a slot of this schedule.
        self.pacer = Pacer(options.rate) if options.rate > 0 else None
        self.items: list[str] = [f"i{i}" for i in range(options.items)]
        self._ids = itertools.count()
        self._pid = os.getpid()

    def event_id(self) -> str:
        return f"{self.tally.prefix}-{self._pid}-{next(self._ids)}"

    current: ClassVar[Shared | None] = None  # set by the locustfile's init listener

    @classmethod
    def get(cls) -> Shared:
        if cls.current is None:
            raise RuntimeError("the locustfile's init listener did not run (use `locust -f`)")
        return cls.current


class _Client(FastHttpUser):
    """What every simulated user does: tokens, JSON calls, think times."""

    abstract = True

    def on_start(self) -> None:
        self.shared = Shared.get()
        self.rng = random.Random()

    @property
    def paced(self) -> Pacer | None:
        """The schedule this user's requests wait for (``--rate``); none for the probe and the
        operator, whose own timing is what they measure."""
        return None

    def stopping(self) -> bool:
        runner = self.environment.runner
        return runner is not None and runner.state in ("stopping", "stopped")

    def think(self, mean: float) -> None:
        if mean > 0 and self.paced is None:  # paced: the schedule is the only wait
            gevent.sleep(min(5 * mean, self.rng.expovariate(1 / mean)))

    def call(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        expect: tuple[int, ...],
        *,
        body: Any = None,
        name: str = "",
    ) -> Any:
        """One request; the answer when its status is one of ``expect``, else ``None`` (and a
        failure in locust's statistics).

        A request sent on a reused keep-alive connection that the server closed at that very
        moment (gunicorn closes idle ones after a few seconds) gets no answer at all; a browser
        resends it, and so do we, once (event ids make a resent batch harmless). The lost
        attempt is reported as the pseudo-request ``RESENT``, not as an HTTP failure.
        """
        name = name or path
        paced = self.paced
        for attempt in range(2):
            if paced is not None:
                gevent.sleep(paced.delay())
            with self.client.request(
                method, path, json=body, headers=headers, name=name, catch_response=True
            ) as answer:
                error = getattr(answer, "error", None)  # set only when there was no answer
                if paced is not None:
                    self.shared.tally.request_paced(time.monotonic())
                if attempt == 0 and isinstance(error, RESENDABLE):
                    answer.request_meta["request_type"] = "RESENT"
                    answer.request_meta["name"] = f"{method} {name}: {type(error).__name__}"
                    answer.success()
                    continue
                if answer.status_code not in expect:
                    answer.failure(f"{method} {name}: {why(answer)}")
                    return None
                return answer
        return None

    def auth(self, user: str) -> dict[str, str] | None:
        """The user's Authorization header; the token is minted on the user's first visit."""
        shared = self.shared
        if not shared.admin:
            return {}
        token = shared.tokens.get(user)
        if token is None:
            answer = self.call("POST", "/v1/tokens", shared.admin, (201,), body={"user": user})
            if answer is None:
                return None
            token = shared.tokens[user] = answer.json()["token"]
        return {"Authorization": f"Bearer {token}"}

    def send(self, user: str, auth: dict[str, str], events_: list[dict[str, Any]]) -> bool:
        self.shared.tally.attempted += len(events_)
        answer = self.call("POST", "/v1/events", auth, (202,), body={"events": events_})
        if answer is None:
            return False
        self.shared.tally.events_answered(user, len(events_), answer.json())
        return True

    def event(self, user: str, item: str, click: bool, prediction_id: str | None) -> dict:
        event = {
            "event_id": self.shared.event_id(),
            "user": user,
            "item": item,
            "signal": "click" if click else "skip",
            "ts": time.time(),
            "context": {"hour": str(time.localtime().tm_hour)},
        }
        if prediction_id:
            event["prediction_id"] = prediction_id
        return event


class SessionUser(_Client):
    """A visitor's browser tab (see the module docstring)."""

    def on_start(self) -> None:
        super().on_start()
        self.base_cache: dict[str, str] = {}  # base URL -> ETag: the tab's HTTP cache

    @property
    def paced(self) -> Pacer | None:
        return self.shared.pacer

    def wait_time(self) -> float:
        mean = self.shared.options.pause
        if self.paced is not None:
            return 0.0  # the next session's first request waits for its slot
        return min(5 * mean, self.rng.expovariate(1 / mean)) if mean > 0 else 0.0

    def model(self, user: str, auth: dict[str, str]) -> dict[str, Any] | None:
        answer = self.call("GET", f"/v1/users/{user}/model", auth, (200,), name=MODEL)
        return None if answer is None else answer.json()

    def base(self, url: str, auth: dict[str, str], revalidate: bool) -> None:
        """Fetch the base once per version; a reload revalidates it (must be a 304)."""
        etag = self.base_cache.get(url)
        if etag is not None and not revalidate:
            return  # Cache-Control: immutable: a client does not even ask
        headers = {**auth, "If-None-Match": etag} if etag else auth
        expect = (304,) if etag else (200,)
        answer = self.call("GET", url, headers, expect, name="/v1/base/[version]")
        if answer is not None and etag is None:
            self.base_cache[url] = answer.headers.get("ETag") or "*"

    def rank(self, user: str, auth: dict[str, str]) -> tuple[str | None, list[dict]]:
        options = self.shared.options
        items = self.shared.items
        candidates = self.rng.sample(items, min(options.candidates, len(items)))
        body = {"items": [{"id": item} for item in candidates], "k": options.shown}
        path, name = f"/v1/users/{user}/rank", "/v1/users/[user]/rank"
        answer = self.call("POST", path, auth, (200,), body=body, name=name)
        if answer is None:
            return None, [{"id": item, "score": 0.2} for item in candidates]
        ranking = answer.json()
        return ranking["prediction_id"], ranking["items"]

    @tag("session", "events", "rank")
    def session(self) -> None:
        """Open the app, see a ranking, react to it in batches, sometimes get a new ranking."""
        options = self.shared.options
        user = self.shared.population.draw(self.rng)
        auth = self.auth(user)
        if auth is None or (model := self.model(user, auth)) is None:
            return
        self.base(model["base_url"], auth, revalidate=False)
        prediction_id, shown = self.rank(user, auth)
        position = 0
        for _ in range(self.rng.randint(1, 2 * options.batches - 1)):
            self.think(options.think)
            if self.stopping():
                return
            batch = []
            for _ in range(options.batch_size):
                item = shown[position % len(shown)]
                position += 1
                click = self.rng.random() < item["score"]
                batch.append(self.event(user, item["id"], click, prediction_id))
            if not self.send(user, auth, batch):
                return
            if self.rng.random() < options.rerank:
                prediction_id, shown = self.rank(user, auth)
                position = 0

    @tag("model")
    def reload(self) -> None:
        """A page reload: the model again, the base revalidated from the tab's cache."""
        user = self.shared.population.draw(self.rng)
        auth = self.auth(user)
        if auth is None or (model := self.model(user, auth)) is None:
            return
        self.base(model["base_url"], auth, revalidate=True)

    @tag("events")
    def burst(self) -> None:
        """A returning app flushing the signals it queued offline (no ranking first)."""
        user = self.shared.population.draw(self.rng)
        auth = self.auth(user)
        if auth is None:
            return
        items = self.shared.items
        size = self.shared.options.batch_size
        batch = [
            self.event(user, self.rng.choice(items), self.rng.random() < 0.2, None)
            for _ in range(size)
        ]
        self.send(user, auth, batch)

    tasks: ClassVar[list[Any]] = [session]  # replaced by --mix when locust starts


class AdminUser(_Client):
    """The operator: an aggregation round every ``--aggregate-every`` seconds, timed."""

    fixed_count = 1

    def wait_time(self) -> float:
        return self.shared.options.aggregate_every

    @tag("admin")
    def aggregate(self) -> None:
        admin, options = self.shared.admin, self.shared.options
        answer = self.call("POST", "/v1/aggregations", admin, (202, 404, 405, 409), body={})
        if answer is None:
            return
        status = answer.status_code
        if status in (404, 405):  # this service has no aggregation endpoint: nothing to time
            log.warning("POST /v1/aggregations answered %d: no rounds in this run", status)
            raise StopUser()
        if status == 409:
            return  # a round is running (started by the beat schedule): fine
        url = answer.json()["url"]
        started = time.perf_counter()
        record: dict[str, Any] = {"status": "timeout"}
        while time.perf_counter() - started < options.round_timeout:
            if self.stopping():  # the test ends: a round still running is not judged
                record = {"status": "unfinished"}
                break
            gevent.sleep(0.1)  # the round time's resolution
            poll = self.call("GET", url, admin, (200,), name="/v1/aggregations/[id]")
            if poll is None:
                continue
            record = poll.json()
            if record["status"] in ROUND_DONE:
                break
        seconds = time.perf_counter() - started
        status = record["status"]
        if status == "unfinished":
            self.shared.tally.rounds.append({"id": url.rsplit("/", 1)[-1], "status": status})
            return
        self.shared.tally.rounds.append(
            {
                "id": url.rsplit("/", 1)[-1],
                "status": status,
                "seconds": seconds,
                "users": (record.get("result") or {}).get("users"),
                "version": (record.get("result") or {}).get("version"),
            }
        )
        self.environment.events.request.fire(
            request_type="ROUND",
            name="aggregation round (start -> end)",
            response_time=seconds * 1000,
            response_length=0,
            context={},
            exception=None if status in ("done", "skipped") else RuntimeError(f"round {status}"),
        )

    tasks: ClassVar[list[Any]] = [aggregate]


class FreshnessProbe(_Client):
    """One event every ``--probe-every`` s; the time until the user's model shows it."""

    fixed_count = 1

    def on_start(self) -> None:
        super().on_start()
        self.user = f"{self.shared.tally.prefix}-probe-{uuid.uuid4().hex[:6]}"
        self.sent = 0

    def wait_time(self) -> float:
        return self.shared.options.probe_every

    @tag("freshness")
    def probe(self) -> None:
        """Send one event, then poll the model every ``POLL_S`` (overlapping polls) until an
        answer shows it. The event became visible between the last poll *sent* that still did
        not show it (the lower bound) and the first *answer* that did (the reading, an upper
        bound, which includes that one GET's own latency)."""
        shared, options = self.shared, self.shared.options
        auth = self.auth(self.user)
        if auth is None:
            return
        item = f"{shared.tally.prefix}-probe-item-{self.sent}"  # never seen: its own feature
        if not self.send(self.user, auth, [self.event(self.user, item, True, None)]):
            return
        accepted = time.perf_counter()
        self.sent += 1
        target = self.sent
        seen = gevent.event.AsyncResult()  # when the first answer showing the event arrived
        not_yet = [accepted]  # when the last poll that did not show it was sent

        def poll() -> None:
            sent_at = time.perf_counter()
            path, name = f"/v1/users/{self.user}/model", f"{MODEL} (freshness poll)"
            answer = self.call("GET", path, auth, (200,), name=name)
            if answer is None:
                return
            if answer.json()["events_applied"] >= target:
                if not seen.ready():
                    seen.set(time.perf_counter())
            else:
                not_yet[0] = max(not_yet[0], sent_at)

        polls = gevent.pool.Pool(POLLS_IN_FLIGHT)
        while not seen.ready() and time.perf_counter() - accepted <= options.probe_timeout:
            polls.spawn(poll)  # waits while POLLS_IN_FLIGHT polls are unanswered
            seen.wait(POLL_S)
        polls.join(timeout=options.probe_timeout)  # the polls in flight end in the statistics
        exception = None
        if seen.ready():
            ms = (seen.get() - accepted) * 1000
            shared.tally.freshness_ms.append(ms)
            shared.tally.freshness_low_ms.append((not_yet[0] - accepted) * 1000)
        else:
            ms = (time.perf_counter() - accepted) * 1000
            shared.tally.freshness_timeouts += 1
            exception = TimeoutError(f"not applied within {options.probe_timeout} s")
        self.environment.events.request.fire(
            request_type="FRESHNESS",
            name="event accepted -> in the user's model",
            response_time=ms,
            response_length=0,
            context={},
            exception=exception,
        )

    tasks: ClassVar[list[Any]] = [probe]
