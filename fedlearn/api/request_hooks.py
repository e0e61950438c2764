"""Every request gets an id, an access-log line and, for pages of allowed origins, CORS headers.

The id is the caller's ``X-Request-ID`` when it is a plausible one (a proxy or a client that
already logs it), else a fresh one; it is echoed in the ``X-Request-ID`` response header and in
every problem+json body (``request_id``), so a user's error report finds the server's log line.
The access log never carries the query string: the demo page's URL holds a token.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request
from flask_cors import CORS

from fedlearn.telemetry.api import UNMATCHED, Metrics

HEADER = "X-Request-ID"
_PLAUSIBLE = re.compile(r"[A-Za-z0-9._:-]{8,128}")
# What a cross-origin page must send (tokens, conditional base fetches) and read (the cache
# validator, how long to back off, the id to quote).
CORS_ALLOW_HEADERS = ["Authorization", "Content-Type", "If-None-Match", HEADER]
CORS_EXPOSE_HEADERS = ["ETag", "Retry-After", "Location", HEADER]
CORS_MAX_AGE_S = 600

access_log = logging.getLogger("fedlearn.access")


def install(app: Flask, metrics: Metrics, cors_origins: list[str]) -> None:
    """Request ids, request metrics, the access log and (when origins are set) CORS."""

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        given = request.headers.get(HEADER, "")
        g.request_id = given if _PLAUSIBLE.fullmatch(given) else uuid.uuid4().hex

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.get("started")
        if started is None:
            return response
        elapsed = time.perf_counter() - started
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        metrics.observe_request(route, request.method, response.status_code, elapsed)
        response.headers[HEADER] = g.request_id
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d %.1fms id=%s",
                request.method, request.path, response.status_code, elapsed * 1e3, g.request_id,
                extra={
                    "request_id": g.request_id, "method": request.method, "path": request.path,
                    "route": route, "status": response.status_code,
                    "duration_ms": round(elapsed * 1e3, 3), "remote": request.remote_addr,
                },
            )  # fmt: skip
        return response

    if cors_origins:
        CORS(
            app,
            origins=cors_origins,
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=CORS_MAX_AGE_S,
            supports_credentials=False,  # bearer tokens, never cookies
        )
