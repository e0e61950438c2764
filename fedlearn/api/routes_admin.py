"""Administration: tokens, publishing a base file, replacing the item catalog."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flask import Response, request

from fedlearn.aggregate.publish import BaseRefused, publish_base
from fedlearn.api.auth import issue_token
from fedlearn.api.context import api_context
from fedlearn.api.errors import Problem, Unavailable, ValidationFailed
from fedlearn.api.parsing import read_json, validate
from fedlearn.api.routing import ApiBlueprint, Reply, json_response
from fedlearn.api.schemas import (
    AdminTokenRequest,
    BasePublished,
    BaseUpload,
    CatalogReplace,
    CatalogReplaced,
    TokenRequest,
    TokenResponse,
)
from fedlearn.config import ConfigError
from fedlearn.store import VersionExistsError

bp = ApiBlueprint("admin", __name__, tag="admin")


@bp.operation(
    "POST",
    "/v1/tokens",
    summary="Issue a bearer token for a user (or an admin token)",
    auth="admin",
    body=TokenRequest,
    replies={201: Reply("the token and when it expires", TokenResponse)},
    errors=(503,),
)
def create_token(body: TokenRequest) -> Response:
    """``{"user": id}`` for a user token (it may act on that user only), ``{"admin": true}``
    for an admin token. ``ttl_s`` is at most ``FEDLEARN_MAX_TOKEN_TTL_S``."""
    settings = api_context().settings
    request = body.root
    admin = isinstance(request, AdminTokenRequest)
    user = None if admin else request.user
    if request.ttl_s is not None and request.ttl_s > settings.max_token_ttl_s:
        message = f"must be at most {settings.max_token_ttl_s} seconds, got {request.ttl_s}"
        raise ValidationFailed(f"ttl_s {message}", errors=[{"field": "ttl_s", "message": message}])
    try:
        issued = issue_token(settings, user=user, admin=admin, ttl_s=request.ttl_s)
    except ConfigError as exc:  # auth off and no key anywhere: nothing to sign with
        raise Unavailable(str(exc)) from None
    answer = {
        "token": issued.token,
        "expires_at": issued.expires_at,
        "sub": issued.sub,
        "role": issued.role,
    }
    return json_response(answer, status=201)


@bp.operation(
    "POST",
    "/v1/base",
    summary="Publish a base model file (.flfm) as a new version, current or staged",
    auth="admin",
    body=BaseUpload,
    replies={
        201: Reply("published", BasePublished),
        200: Reply("these exact bytes were already published as this version", BasePublished),
    },
    errors=(409, 413, 503),
)
def publish_base_file(body: BaseUpload) -> Response:
    """The file must decode, have features, the current base's number of factors and
    bounded rows (CONTRACTS.md); a version id already holding other bytes is a 409. Larger
    files than ``FEDLEARN_MAX_BODY_BYTES`` are published with `fedlearn base publish`."""
    ctx = api_context()
    try:
        blob = base64.b64decode(body.flfm, validate=True)
        published = publish_base(
            ctx.store, blob, version=body.version, make_current=body.make_current,
            max_row_norm=ctx.settings.aggregation_max_row_norm,
            max_features=ctx.settings.aggregation_max_base_features, source="POST /v1/base",
        )  # fmt: skip
    except binascii.Error as exc:
        raise _invalid("flfm", f"not base64: {exc}") from None
    except BaseRefused as exc:
        raise _invalid(exc.field, exc.message) from None
    except VersionExistsError as exc:
        raise Problem(str(exc), status=409, title="Conflict", kind="version-exists") from None
    return json_response(published.to_json(), status=201 if published.created else 200)


@bp.operation(
    "PUT",
    "/v1/items",
    summary="Replace the item catalog, atomically",
    auth="admin",
    body=CatalogReplace,
    parse_body=False,
    replies={200: Reply("the new catalog's version", CatalogReplaced)},
    errors=(400, 413, 422, 503),
)
def replace_items() -> Response:
    """The catalog is swapped whole (readers see the old one or the new one) and versioned.
    Larger catalogs are loaded with `fedlearn catalog load`."""
    raw = read_json(request)  # 400/413 as for every body
    duplicate = _duplicate_key(request.get_data(cache=True))
    if duplicate is not None:
        raise _invalid("items", f"names {duplicate!r} twice (an item id may appear once)")
    body = validate(CatalogReplace, raw)
    catalog = {i: {"title": v.title, "features": v.features} for i, v in body.items.items()}
    version = api_context().store.catalog.replace(catalog)
    return json_response({"version": version, "items": len(catalog)})


def _duplicate_key(raw: bytes) -> str | None:
    """A key some object of the JSON body names twice (e.g. an item id): a JSON parser keeps
    only the last, so the duplicate would otherwise pass unseen."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) < len(items) and not found:
            seen: set[str] = set()
            found.extend(k for k, _ in items if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        return out

    json.loads(raw, object_pairs_hook=pairs)
    return found[0] if found else None


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field} {message}; nothing was changed", errors=[{"field": field, "message": message}]
    )
