"""The client: one urllib3 pool, one ``_request`` seam, retries where repeating is harmless."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urljoin

import orjson
import urllib3

from fedlearn.client.errors import ApiError, ClientError
from fedlearn.client.local import candidates, needed_features
from fedlearn.client.types import Event, Ranking, Session
from fedlearn.model import Base
from fedlearn.model.rowset import PartialBase, RowSet

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0
MAX_KEPT_BUCKETS = 1 << 16  # ~60 MB of buckets at most, whatever a long-lived client ranks
# A round's statuses it never leaves (the server's aggregate.round.TERMINAL; a test keeps
# them equal: the client imports nothing of the server).
ROUND_ENDED = frozenset({"done", "skipped", "failed", "abandoned", "rejected"})


class Client:
    """A fedlearn API at ``url`` with a bearer ``token`` (a user's, or an admin's).

    ``retries`` bounds the attempts of a request that may be repeated (a read, or a batch of
    events: the server de-duplicates by ``event_id``); the wait doubles from ``backoff_s`` up
    to ``max_backoff_s`` with jitter, or is what ``Retry-After`` says. Bases are kept in memory
    by version (they are immutable) with their ETag.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = 10.0,
        retries: int = 5,
        backoff_s: float = 0.25,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if retries < 0 or backoff_s <= 0 or max_backoff_s < backoff_s or timeout_s <= 0:
            raise ValueError(
                f"need retries >= 0, 0 < backoff_s <= max_backoff_s and timeout_s > 0; got "
                f"retries={retries}, backoff_s={backoff_s}, max_backoff_s={max_backoff_s}, "
                f"timeout_s={timeout_s}"
            )
        self.url = url.rstrip("/")
        self.token = token
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._http = urllib3.PoolManager(retries=False, timeout=timeout_s)
        self._bases: dict[str, tuple[str, Base]] = {}  # base URL -> (ETag, parsed base)
        self._rowsets: dict[str, RowSet] = {}  # bucket URL -> its rows (immutable)
        self.received_bytes = 0  # bodies, status lines and headers of every answer
        self.received_body_bytes = 0  # the bodies alone
        self.responses = 0

    # -- users ------------------------------------------------------------------------------

    def start_session(
        self,
        user: str,
        items: Iterable[str | Mapping[str, Any]] | None = None,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> Session:
        """The user's model and its base. Without ``items`` the whole base, downloaded once
        per version; with them (ids or ``{"id", "features"}``, as :meth:`rank` takes) only
        the buckets of rows that scoring them in ``context`` reads (``session.base`` is then a
        ``PartialBase``; :meth:`prepare` fetches more), so the bytes do not grow with the
        catalog."""
        model = self._json("GET", f"/v1/users/{_seg(user)}/model")
        if items is None:
            base, downloaded = self._base(model["base_url"])
            return Session(user=user, model=model, base=base, base_downloaded=downloaded)
        session = Session(
            user=user,
            model=model,
            base=PartialBase.from_json(model["base_version"], model["base_rows"]),
            base_downloaded=False,
        )
        self.prepare(session, items, context=context)
        return session

    def prepare(
        self,
        session: Session,
        items: Iterable[str | Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> int:
        """Fetch the buckets a partial session lacks to score ``items`` locally; returns how
        many it fetched (buckets are immutable: kept in memory by URL, never refetched).

        When the session's base version was pruned meanwhile (410: the session outlived the
        server's ``FEDLEARN_BASE_KEEP_VERSIONS`` promotions), its buckets are gone for good:
        the session moves once to the user's current model and base (``session.model`` and
        ``session.base`` replaced, as the browser client's ``prepare``) and fetches the rows
        there. A 410 after that move is raised."""
        if not isinstance(session.base, PartialBase):
            return 0  # a whole base holds every row
        names = needed_features(session.user, candidates(items), context)
        try:
            return self._fetch_buckets(session, names)
        except ApiError as exc:
            if exc.status != 410:
                raise
        model = self._json("GET", f"/v1/users/{_seg(session.user)}/model")
        session.model = model
        session.base = PartialBase.from_json(model["base_version"], model["base_rows"])
        session.base_downloaded = False
        return self._fetch_buckets(session, names)

    def _fetch_buckets(self, session: Session, names: list[str]) -> int:
        """The buckets of ``names`` the session's partial base lacks, fetched into it."""
        base = session.base
        assert isinstance(base, PartialBase)
        missing = base.missing(names)
        template = session.model["base_rows"]["url"]
        for bucket in missing:
            base.add(self._bucket(template.replace("{bucket}", str(bucket))))
        return len(missing)

    def rank(
        self,
        user: str,
        items: Iterable[str | Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
        k: int | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> Ranking:
        """Ask the server to rank ``items`` (ids, or ``{"id", "features"}``) for ``user``,
        exploring under ``policy`` (``{"kind": "epsilon", "epsilon": 0.1}``, ``{"kind":
        "softmax", "temperature": 0.1}``; default: the operator's) within the operator's
        limits."""
        body: dict[str, Any] = {
            "items": [{"id": i} if isinstance(i, str) else dict(i) for i in items]
        }
        if context is not None:
            body["context"] = dict(context)
        if k is not None:
            body["k"] = k
        if policy is not None:
            body["policy"] = dict(policy)
        # A ranking stores a prediction record: repeating it would store two, so no retries.
        answer = self._json("POST", f"/v1/users/{_seg(user)}/rank", body, retry=False)
        return Ranking(
            prediction_id=answer["prediction_id"],
            base_version=answer["base_version"],
            items=[(row["id"], row["score"]) for row in answer["items"]],
            propensities=[row["propensity"] for row in answer["items"]],
            policy=answer["policy"],
        )

    def send_events(self, events: Iterable[Event]) -> dict[str, int]:
        """Send a batch: ``{"accepted": n, "duplicates": m}``. Retried on 429/5xx/no answer
        with the same event ids, so a batch the server got before a lost answer comes back
        as duplicates, never counted twice."""
        batch = [e.to_json() for e in events]
        if not batch:
            raise ValueError("send_events needs at least one event")
        return self._json("POST", "/v1/events", {"events": batch}, retry=True)

    def click(self, user: str, item: str, **fields: Any) -> dict[str, int]:
        return self.send_events([Event(user, item, "click", **fields)])

    def skip(self, user: str, item: str, **fields: Any) -> dict[str, int]:
        return self.send_events([Event(user, item, "skip", **fields)])

    # -- admin ------------------------------------------------------------------------------

    def issue_token(self, user: str | None = None, *, ttl_s: int | None = None) -> str:
        """A token for ``user`` (or an admin token when ``user`` is None); needs an admin."""
        body: dict[str, Any] = {"user": user} if user is not None else {"admin": True}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return str(self._json("POST", "/v1/tokens", body, retry=False)["token"])

    def forget_user(self, user: str) -> None:
        """Forget the user's clone and revoke their tokens (repeatable: retried)."""
        self._request("DELETE", f"/v1/users/{_seg(user)}", retry=True)

    def start_aggregation(self, **options: Any) -> dict[str, Any]:
        """Queue a round (``strategy``, ``min_users``); returns its id, status and URL."""
        return self._json("POST", "/v1/aggregations", options, retry=False)

    def aggregation(self, round_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/aggregations/{_seg(round_id)}")

    def wait_for_aggregation(self, round_id: str, *, timeout_s: float = 120.0) -> dict[str, Any]:
        """Poll the round until it ends (:data:`ROUND_ENDED`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.aggregation(round_id)
            if state["status"] in ROUND_ENDED:
                return state
            if time.monotonic() > deadline:
                raise ClientError(f"round {round_id} still {state['status']} after {timeout_s} s")
            self._sleep(0.2)

    def rollback(self, version: str) -> dict[str, Any]:
        return self._json("POST", "/v1/base/rollback", {"version": version}, retry=False)

    def ready(self) -> dict[str, Any]:
        return self._json("GET", "/readyz", auth=False)

    # -- the seam ---------------------------------------------------------------------------

    def _bucket(self, url: str) -> RowSet:
        rows = self._rowsets.get(url)
        if rows is None:
            rows = RowSet.from_bytes(self._request("GET", url).data)
            if len(self._rowsets) >= MAX_KEPT_BUCKETS:
                self._rowsets.pop(next(iter(self._rowsets)))  # the oldest: enough to bound it
            self._rowsets[url] = rows
        return rows

    def _base(self, url: str) -> tuple[Base, bool]:
        cached = self._bases.get(url)
        headers = {"If-None-Match": cached[0]} if cached else {}
        response = self._request("GET", url, headers=headers, ok=(200, 304))
        if response.status == 304 and cached is not None:
            return cached[1], False
        base = Base.from_bytes(response.data)
        self._bases[url] = (response.headers.get("ETag", ""), base)
        return base, True

    def _json(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        retry: bool | None = None,
        auth: bool = True,
    ) -> Any:
        response = self._request(method, path, body=body, retry=retry, auth=auth)
        return response.json()

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry: bool | None = None,
        auth: bool = True,
        ok: tuple[int, ...] = (200, 201, 202, 204),
    ) -> urllib3.BaseHTTPResponse:
        """One request, retried (when ``retry``, by default for GET) on no answer, 408, 429
        and 5xx; anything else not in ``ok`` raises :class:`ApiError`."""
        what = f"{method} {path}"
        head = dict(headers or {})
        if auth and self.token:
            head["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            head["Content-Type"] = "application/json"
        attempts = 1 + (self.retries if (retry if retry is not None else method == "GET") else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._http.request(
                    method, urljoin(self.url + "/", path.lstrip("/")), body=data, headers=head,
                    redirect=False,
                )  # fmt: skip
            except urllib3.exceptions.HTTPError as exc:
                if last:
                    raise ClientError(
                        f"{what}: no answer after {attempts} attempts: {exc}"
                    ) from exc
                self._sleep(self._backoff(attempt, None))
                continue
            self.received_bytes += _wire_size(response)
            self.received_body_bytes += len(response.data)
            self.responses += 1
            if response.status in ok:
                return response
            if response.status in RETRY_STATUSES and not last:
                self._sleep(self._backoff(attempt, response.headers.get("Retry-After")))
                continue
            raise ApiError(what, response.status, _problem(response), _request_id(response))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(MAX_RETRY_AFTER_S, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        wait = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return wait * (0.5 + random.random() / 2)  # jitter: clients that failed together spread


def _seg(value: str) -> str:
    """A path segment, quoted: an id can't reach another route."""
    return quote(value, safe="")


def _wire_size(response: urllib3.BaseHTTPResponse) -> int:
    """Bytes of an answer as HTTP/1.1 sent it: status line, headers, body."""
    head = sum(len(k) + len(v) + 4 for k, v in response.headers.items())
    return len("HTTP/1.1 200 OK\r\n\r\n") + head + len(response.data)


def _request_id(response: urllib3.BaseHTTPResponse) -> str | None:
    return response.headers.get("X-Request-ID")


def _problem(response: urllib3.BaseHTTPResponse) -> dict[str, Any]:
    try:
        problem = orjson.loads(response.data)
    except orjson.JSONDecodeError:
        return {"detail": response.data[:200].decode(errors="replace")}
    return problem if isinstance(problem, dict) else {"detail": str(problem)}
