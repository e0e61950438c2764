"""Users' models and the bases they build on, and the item catalog of the demo page.

A session starts with ``GET /v1/users/{user}/model`` (small: the user's delta and where the
base is); the base itself comes from ``GET /v1/base/{version}``, immutable and cacheable
forever, so a returning client revalidates it with ``If-None-Match`` and gets a 304. A client
that needs only some rows fetches their buckets instead (``routes_baserows``, ``base_rows``).
``GET /v1/base/current`` answers ``307`` to the versioned URL (with ``{version, url}`` as its
body, for clients that do not follow redirects); it is never cached.
"""

from __future__ import annotations

from typing import Any

from flask import Response, request, url_for

from fedlearn.api.auth import refuse_revoked
from fedlearn.api.context import ApiContext, api_context
from fedlearn.api.errors import Gone, NotFound, Problem
from fedlearn.api.routing import ApiBlueprint, Reply, json_response, principal, take_revocation_due
from fedlearn.api.schemas import BaseRef, Catalog, ItemsQuery, UserModel
from fedlearn.model import Base
from fedlearn.serving.base_cache import PUBLISH_HINT
from fedlearn.serving.base_rows import rows_head, served_buckets
from fedlearn.serving.clones import load_clone, model_json, read_user
from fedlearn.serving.ingest import forget_entry
from fedlearn.store import PrunedVersionError, UnknownVersionError

bp = ApiBlueprint("models", __name__, tag="models")

IMMUTABLE = "public, max-age=31536000, immutable"
SERVED_BASE = "models.served_base"  # ApiContext.cache: (version, root), base URL, rows head
FLFM = "application/octet-stream"


def bucket_url(version: str, n_buckets: int) -> str:
    """The URL template of ``version``'s buckets (``routes_baserows``), ``{bucket}`` standing
    for the number."""
    url = url_for("base_rows.get_bucket", version=version, n_buckets=n_buckets, bucket=0)
    return url.removesuffix("0") + "{bucket}"


def version_missing(version: str, exc: Exception) -> Problem:
    """The answer for a base ``version`` without bytes: 410 when retention pruned it, 404 when
    it never existed (``exc``: the store's error, or ``ValueError`` for a malformed id). Both
    name the current version, which is what a client holding an old one fetches instead."""
    current = api_context().store.bases.current_version()
    fix = (
        f"the current one is {current!r} (GET /v1/users/{{user}}/model names it and its "
        f"bucket URL; GET /v1/base/current redirects to it)"
    )
    if isinstance(exc, PrunedVersionError):
        return Gone(
            f"base version {version!r} was pruned at {exc.when}: only recent versions are kept "
            f"(FEDLEARN_BASE_KEEP_VERSIONS); {fix}",
            extra={"current_version": current, "pruned_at": exc.pruned_at},
        )
    return NotFound(
        f"base version {version!r} does not exist; {fix}", extra={"current_version": current}
    )


def immutable_response(blob: bytes, etag: str) -> Response:
    """Bytes that never change under ``etag``: cacheable for good, 304 when the client has them."""
    if request.if_none_match.contains_weak(etag):  # RFC 9110: weak comparison, and '*'
        response = empty_response(304)
    else:
        response = Response(blob, mimetype=FLFM)
    response.set_etag(etag)
    response.headers["Cache-Control"] = IMMUTABLE
    return response


def empty_response(status: int) -> Response:
    response = Response(status=status)
    del response.headers["Content-Type"]  # no body, so no type (werkzeug adds text/html)
    return response


@bp.operation(
    "GET",
    "/v1/users/<user>/model",
    summary="The user's clone: base version, base URL and the user's delta",
    auth="user",
    replies={200: Reply("the clone (an empty delta for a user without one)", UserModel)},
    errors=(503,),
    revocation_in_view=True,
)
def get_model(user: str) -> Response:
    """Everything a client needs to score locally: fetch ``base_url`` once per version, add
    the delta. ``serve`` says whether to use the clone or the plain base."""
    ctx = api_context()
    # One round trip for the token's revocation, the base pointer and the user's records.
    read = read_user(ctx.store, ctx.bases, user, revocation=take_revocation_due())
    refuse_revoked(principal(), read.revoked_at)
    clone = load_clone(
        ctx.store, ctx.bases, user,
        gating=ctx.settings.gate, on_unreadable=ctx.metrics.unreadable_records.inc, read=read,
    )  # fmt: skip
    base_url, rows = served_base(ctx, clone.base)
    answer = model_json(clone, ctx.settings, base_url)
    answer["base_rows"] = rows
    return json_response(answer)


def served_base(ctx: ApiContext, base: Base) -> tuple[str, dict[str, Any]]:
    """The URL of ``base``'s bytes and the ``base_rows`` head of the model answer: the same
    for every user of a version, so built once per version (two ``url_for`` and the bucket
    count were a tenth of the route's own time), not per request. Shared read-only."""
    key = (base.version, request.script_root)
    cached = ctx.cache.get(SERVED_BASE)
    if cached is None or cached[0] != key:
        rows_url = bucket_url(base.version, served_buckets(base, ctx.settings))
        url = url_for("models.get_base", version=base.version)
        cached = (key, url, rows_head(base, ctx.settings, rows_url))
        ctx.cache[SERVED_BASE] = cached  # one tuple: another thread sees the old or the new
    return cached[1], cached[2]


@bp.operation(
    "DELETE",
    "/v1/users/<user>",
    summary="Forget the user's clone and pending predictions; revoke the user's tokens",
    auth="user",
    replies={204: Reply("forgotten (also when there was nothing to forget)", media_type="")},
    errors=(503,),
)
def delete_user(user: str) -> Response:
    """Erase the user's delta and pending predictions now, and tell the trainer in stream order.

    Every token issued to the user before this call is refused from now on (401); a token
    issued afterwards works.

    The trainer that owns the user's shard keeps the delta in memory and would write it back;
    the ``forget`` entry reaches it in order with the user's events, so it drops the user there
    (and the events before it), and events sent after the deletion start a new clone.
    """
    ctx = api_context()
    # First, so that whatever fails below, the user's tokens already stop working.
    ctx.revocations.revoke(user, keep_s=ctx.settings.max_token_ttl_s)
    shard = ctx.store.shard_of(user)
    ctx.store.streams.append_events(shard, [forget_entry(user)])
    record = ctx.store.deltas.get(shard, user)
    ctx.store.deltas.delete_user(shard, user)
    ctx.store.predictions.delete_user(shard, user)
    # Rounds keep copies of the delta too: the snapshot, and archives of past generations.
    generation = record.generation if record else 0
    current = ctx.store.bases.current_version()
    if current is not None:
        generation = max(generation, ctx.bases.generation(ctx.bases.get(current)))
    ctx.store.rounds.forget_user(shard, user, generations=range(generation + 1))
    return empty_response(204)


@bp.operation(
    "GET",
    "/v1/base/current",
    summary="Redirect to the current base version",
    auth="token",
    replies={
        307: Reply(
            "the current version; Location is its immutable URL",
            BaseRef,
            headers={"Location": "URL of the current base's bytes"},
        )
    },
    errors=(404, 503),
)
def get_current_base() -> Response:
    ctx = api_context()
    version = ctx.store.bases.current_version()
    if version is None:
        raise NotFound(f"no base model is published yet: {PUBLISH_HINT}")
    url = url_for("models.get_base", version=version)
    response = json_response({"version": version, "url": url}, status=307)
    response.headers["Location"] = url
    return response


@bp.operation(
    "GET",
    "/v1/base/<version>",
    summary="The bytes of a base version (.flfm), immutable",
    auth="token",
    replies={
        200: Reply(
            "the .flfm file (see CONTRACTS.md)",
            media_type=FLFM,
            headers={"ETag": 'the version, quoted: "<version>"', "Cache-Control": IMMUTABLE},
        ),
        304: Reply("not modified (If-None-Match matched)", media_type="",
                   headers={"ETag": 'the version, quoted: "<version>"'}),
    },
    errors=(404, 410, 503),
)  # fmt: skip
def get_base(version: str) -> Response:
    ctx = api_context()
    try:
        blob = ctx.blobs.get(version)
    except (UnknownVersionError, ValueError) as exc:
        raise version_missing(version, exc) from None
    return immutable_response(blob, version)


@bp.operation(
    "GET",
    "/v1/items",
    summary="Items of the catalog, for the demo page",
    auth="token",
    query=ItemsQuery,
    replies={200: Reply("up to `limit` items (none while no catalog is loaded)", Catalog)},
    errors=(503,),
)
def list_items(query: ItemsQuery) -> Response:
    ctx = api_context()
    items, _ = ctx.store.catalog.page(query.limit)
    return json_response({"items": items[: query.limit]})
