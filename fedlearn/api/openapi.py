"""The OpenAPI 3.1 document, built from the registered operations and the pydantic models.

Nothing here is written by hand per endpoint: the paths come from the operations that the
blueprints registered with Flask (``routing.py``), the schemas from the same pydantic models
that validate requests (``schemas.py``), the limits from the settings in force. The error
answers an operation can give follow from how it is declared (a token -> 401, a body -> 400,
413 and 422, ...), each as ``application/problem+json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from flask import Flask
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

import fedlearn
from fedlearn.api.context import EXTENSION
from fedlearn.api.errors import PROBLEM_JSON
from fedlearn.api.routing import ApiBlueprint, Operation, Reply
from fedlearn.api.schemas import ProblemDetails

REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_ERROR_TITLES = {
    400: "the body is not JSON",
    401: "missing, invalid or expired bearer token",
    403: "the token may not act on this user",
    404: "not found",
    409: "conflicts with the current state (e.g. a round is already running)",
    410: "the base version was pruned (retention); the current one replaces it",
    413: "the body is over FEDLEARN_MAX_BODY_BYTES (or a rank call over its cell cap)",
    422: "a field is invalid; `errors` names each one",
    429: "the token's rate limit, or a full shard stream; retry after Retry-After seconds",
    500: "the server failed; nothing about the failure is disclosed",
    503: "Redis does not answer, or no base is published yet",
}
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": "Bearer challenge, with the error"},
    429: {"Retry-After": "seconds to wait before resending"},
}


def operations(app: Flask) -> Iterator[Operation]:
    for blueprint in app.blueprints.values():
        if isinstance(blueprint, ApiBlueprint):
            yield from blueprint.operations


def openapi_path(rule: str) -> str:
    """``/v1/users/<user>/model`` -> ``/v1/users/{user}/model``."""
    return _PARAM.sub(r"{\1}", rule)


def _fix_maps(node: Any) -> None:
    """Turn pydantic's ``patternProperties`` (keys checked by pattern) into ``propertyNames`` +
    ``additionalProperties``: the same rule, but one that also *refuses* a key breaking the
    pattern, as the validation does."""
    if isinstance(node, dict):
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1:
            ((pattern, value),) = patterns.items()
            node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
            node["additionalProperties"] = value
            del node["patternProperties"]
        for child in node.values():
            _fix_maps(child)
    elif isinstance(node, list):
        for child in node:
            _fix_maps(child)


def _schemas(ops: list[Operation]) -> tuple[dict[Any, Any], dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], str]] = [(ProblemDetails, "serialization")]
    for op in ops:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        wanted += [(r.model, "serialization") for r in op.replies.values() if r.model]
    refs, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    components = top.get("$defs", {})
    _fix_maps(components)
    return refs, components


def _limits(components: dict[str, Any], app: Flask) -> None:
    """Limits that are settings, not constants, stated in the schema as in force."""
    settings = app.extensions[EXTENSION].settings
    for model, field, key, limit in (
        ("EventBatch", "events", "maxItems", settings.max_events_per_request),
        ("RankRequest", "items", "maxItems", settings.max_rank_items),
        ("UserTokenRequest", "ttl_s", "maximum", settings.max_token_ttl_s),
        ("AdminTokenRequest", "ttl_s", "maximum", settings.max_token_ttl_s),
        ("EpsilonChoice", "epsilon", "maximum", settings.explore_max_epsilon),
        ("SoftmaxChoice", "temperature", "minimum", settings.explore_min_temperature),
    ):
        for name in (model, f"{model}-Input"):
            if name not in components:
                continue
            prop = components[name]["properties"][field]
            # a nullable field is anyOf [the type, null]: the limit goes on the type
            target = prop["anyOf"][0] if "anyOf" in prop else prop
            target[key] = limit


def _headers(headers: dict[str, str]) -> dict[str, Any]:
    return {
        name: {"description": text, "required": True, "schema": {"type": "string"}}
        for name, text in headers.items()
    }


def _reply(reply: Reply, refs: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.media_type:
        if reply.model is not None:
            schema = refs[(reply.model, "serialization")]
        elif reply.media_type == "application/json":
            schema = {"type": "object"}
        else:
            schema = {"type": "string"}
        out["content"] = {reply.media_type: {"schema": schema}}
    if reply.headers:
        out["headers"] = _headers(dict(reply.headers))
    return out


def _error_statuses(op: Operation) -> list[int]:
    statuses = set(op.errors) | {500}
    if op.auth != "none":
        statuses.add(401)
    if op.auth in ("user", "admin"):
        statuses.add(403)
    if op.body is not None:
        statuses |= {400, 413, 422}
    if op.query is not None or _PARAM.search(op.rule):
        statuses.add(422)
    return sorted(statuses - set(op.replies))


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params = []
    for name in _PARAM.findall(op.rule):
        kind, description = op.path_params[name]
        params.append({
            "name": name, "in": "path", "required": True, "description": description,
            "schema": TypeAdapter(kind).json_schema(),
        })  # fmt: skip
    if op.query is not None:
        schema = op.query.model_json_schema()
        required = set(schema.get("required", ()))
        for name, prop in schema["properties"].items():
            params.append({"name": name, "in": "query", "required": name in required,
                           "schema": prop})  # fmt: skip
    return params


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.endpoint.replace(".", "_"),
        "summary": op.summary,
        "description": op.description,
        "tags": [op.tag],
        "security": [] if op.auth == "none" else [{"bearer": []}],
    }
    params = _parameters(op)
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    responses = {str(status): _reply(reply, refs) for status, reply in op.replies.items()}
    problem = refs[(ProblemDetails, "serialization")]
    for status in _error_statuses(op):
        error: dict[str, Any] = {
            "description": _ERROR_TITLES.get(status, "an error; see detail"),
            "content": {PROBLEM_JSON: {"schema": problem}},
        }
        if status in _ERROR_HEADERS:
            error["headers"] = _headers(_ERROR_HEADERS[status])
        responses[str(status)] = error
    out["responses"] = responses
    return out


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s registered operations."""
    ops = list(operations(app))
    refs, components = _schemas(ops)
    _limits(components, app)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(openapi_path(op.rule), {})[op.method] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fedlearn",
            "version": fedlearn.__version__,
            "description": "Federated per-user personalization: fetch a user's clone, rank "
            "with it, stream click/skip events. Errors are application/problem+json.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `fedlearn token USER` or POST /v1/tokens",
                }
            },
        },
    }
