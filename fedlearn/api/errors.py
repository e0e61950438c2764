"""Every error answer is ``application/problem+json`` (RFC 9457), never a 200 with an error in it.

Routes raise :class:`Problem` (or a subclass) with the status, a detail that names the field,
the value and the fix, and, for validation, a list of ``{field, message}``. Werkzeug's HTTP
errors (404 of an unknown route, 405, 413 of a too large body) and unexpected exceptions go
through the same handlers; a 500 says nothing about the exception (it is logged instead).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from flask import Flask, Response, g, has_request_context, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://fedlearn.dev/problems/"
TOO_LARGE = (
    "the request body is larger than the {limit} bytes accepted (FEDLEARN_MAX_BODY_BYTES); "
    "send less per request (split event batches)"
)


class Problem(Exception):
    """An error answer. ``kind`` is the last part of the problem ``type`` URI."""

    status = 500
    title = "Internal Server Error"
    kind = "internal"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        kind: str | None = None,
        errors: Iterable[Mapping[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        if kind is not None:
            self.kind = kind
        self.errors = [dict(e) for e in errors]
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            out["errors"] = self.errors
        out.update(self.extra)
        return out


class BadRequest(Problem):
    status, title, kind = 400, "Bad Request", "bad-request"


class Unauthorized(Problem):
    status, title, kind = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str, *, error: str = "invalid_token") -> None:
        # RFC 6750: the challenge tells the client a bearer token is expected, and why.
        super().__init__(
            detail,
            headers={"WWW-Authenticate": f'Bearer realm="fedlearn", error="{error}"'},
        )


class Forbidden(Problem):
    status, title, kind = 403, "Forbidden", "forbidden"


class NotFound(Problem):
    status, title, kind = 404, "Not Found", "not-found"


class Gone(Problem):
    status, title, kind = 410, "Gone", "gone"


class PayloadTooLarge(Problem):
    status, title, kind = 413, "Content Too Large", "too-large"


class ValidationFailed(Problem):
    status, title, kind = 422, "Unprocessable Content", "validation"


class TooManyRequests(Problem):
    status, title, kind = 429, "Too Many Requests", "stream-full"


class RateLimited(TooManyRequests):
    kind = "rate-limited"


class Unavailable(Problem):
    status, title, kind = 503, "Service Unavailable", "unavailable"


def problem_response(problem: Problem) -> Response:
    body = problem.body()
    if has_request_context() and g.get("request_id"):
        body["request_id"] = g.request_id  # the id the access log and X-Request-ID carry
    response = Response(orjson.dumps(body), status=problem.status)
    response.content_type = PROBLEM_JSON
    response.headers["Cache-Control"] = "no-store"
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


def _from_http(exc: HTTPException) -> Problem:
    status = exc.code or 500
    kind = {
        404: "not-found",
        405: "method-not-allowed",
        413: "too-large",
        400: "bad-request",
    }.get(status, f"http-{status}")
    headers: dict[str, str] = {}
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))  # type: ignore[attr-defined]
    detail = exc.description or exc.name
    if status == 404:
        detail = "no such endpoint; see /openapi.json for the ones that exist"
    elif status == 413:
        limit = request.max_content_length if request else None
        detail = TOO_LARGE.format(limit=limit)
    return Problem(detail, status=status, title=exc.name, kind=kind, headers=headers)


def register(app: Flask) -> None:
    """Install the handlers that turn every error into problem+json."""

    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return problem_response(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return problem_response(_from_http(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        rid = g.get("request_id") if has_request_context() else None
        log.exception("unhandled error (request id %s)", rid, extra={"request_id": rid})
        return problem_response(
            Problem("the server failed to answer this request; it has been logged")
        )
