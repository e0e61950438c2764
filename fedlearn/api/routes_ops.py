"""Operations: liveness, readiness, Prometheus metrics, and the OpenAPI document."""

from __future__ import annotations

import orjson
from flask import Response, current_app

from fedlearn.aggregate.checks import is_finite
from fedlearn.api.context import api_context
from fedlearn.api.errors import Unavailable
from fedlearn.api.openapi import build_document
from fedlearn.api.routing import ApiBlueprint, Reply, json_response
from fedlearn.api.schemas import Health, Ready
from fedlearn.serving.base_cache import PUBLISH_HINT

bp = ApiBlueprint("ops", __name__, tag="ops")


@bp.operation(
    "GET", "/healthz", summary="The process is up", auth="none",
    replies={200: Reply("up", Health)},
)  # fmt: skip
def healthz() -> Response:
    """Answers without touching Redis: a liveness probe must not fail because Redis does."""
    return json_response({"status": "ok"})


@bp.operation(
    "GET", "/readyz", summary="Redis answers and the current base loads and is finite",
    auth="none",
    replies={200: Reply("ready to serve", Ready)}, errors=(503,),
)  # fmt: skip
def readyz() -> Response:
    ctx = api_context()
    try:
        ctx.store.ping()
        version = ctx.store.bases.current_version()
    except Exception as exc:  # any failure to reach Redis means "not ready", never a 500
        raise Unavailable(f"Redis does not answer: {type(exc).__name__}: {exc}") from None
    if version is None:
        raise Unavailable(f"no base model is published yet: {PUBLISH_HINT}")
    problem = _unservable(version)
    if problem:
        raise Unavailable(
            f"the current base {version!r} cannot be served: {problem}; roll back to a good "
            f"version with POST /v1/base/rollback or `fedlearn base list`"
        )
    return json_response(
        {"status": "ready", "base_version": version, "n_shards": ctx.store.n_shards}
    )


def _unservable(version: str) -> str | None:
    """Why base ``version`` cannot serve (it does not load, or holds a non-finite number),
    ``None`` if it can. Versions are immutable, so a good verdict is kept per version."""
    ctx = api_context()
    key = f"servable:{version}"
    if ctx.cache.get(key):
        return None
    try:
        base = ctx.bases.get(version)
    except Exception as exc:  # unreadable bytes, a pointer to nothing, Redis gone: not ready
        return f"{type(exc).__name__}: {exc}"
    if not is_finite(base):
        return "it holds non-finite parameters"
    ctx.cache[key] = True
    return None


@bp.operation(
    "GET", "/metrics", summary="Prometheus metrics", auth="none",
    replies={200: Reply("text exposition format", media_type="text/plain")},
)  # fmt: skip
def metrics() -> Response:
    body, content_type = api_context().metrics.exposition()
    return Response(body, content_type=content_type)


@bp.operation(
    "GET", "/openapi.json", summary="This API's OpenAPI 3.1 document", auth="none",
    replies={200: Reply("the document")},
)  # fmt: skip
def openapi_json() -> Response:
    ctx = api_context()
    document = ctx.cache.get("openapi")
    if document is None:
        document = ctx.cache["openapi"] = orjson.dumps(build_document(current_app))
    return Response(document, mimetype="application/json")
