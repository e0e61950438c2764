"""Partial bases: a base's rows in immutable buckets, and exactly the rows a client names.

A session scores a few hundred features, not the base's million rows. ``GET
/v1/base/{version}/buckets/{n_buckets}/{bucket}`` serves the rows whose name hashes to the
bucket (``.flrs``, CONTRACTS.md), immutable and shared by every user and HTTP cache: the
clients use it, their URL comes in the user's model answer. ``POST /v1/base/{version}/rows``
answers exactly the rows named, for callers no cache helps (it is not cacheable).
"""

from __future__ import annotations

from flask import Response, request

from fedlearn.api.context import api_context
from fedlearn.api.errors import NotFound, PayloadTooLarge
from fedlearn.api.parsing import read_json, validate
from fedlearn.api.routes_models import FLFM, IMMUTABLE, immutable_response, version_missing
from fedlearn.api.routing import ApiBlueprint, Reply, list_length
from fedlearn.api.schemas import RowsRequest
from fedlearn.serving.base_rows import BucketNotServedError, bucket_bytes, exact_bytes
from fedlearn.store import UnknownVersionError

bp = ApiBlueprint("base_rows", __name__, tag="models")

FLRS = FLFM  # both are application/octet-stream
BUCKET_PARAMS = {
    "n_buckets": (int, "the bucket count the model answer names (base_rows.n_buckets)"),
    "bucket": (int, "fnv1a32(utf8(feature name)) % n_buckets"),
}


@bp.operation(
    "GET",
    "/v1/base/<version>/buckets/<int:n_buckets>/<int:bucket>",
    summary="One bucket of a base's rows (.flrs), immutable",
    auth="token",
    path_params=BUCKET_PARAMS,
    replies={
        200: Reply(
            "the bucket's rows (.flrs, see CONTRACTS.md)",
            media_type=FLRS,
            headers={"ETag": '"<version>.<n_buckets>.<bucket>"', "Cache-Control": IMMUTABLE},
        ),
        304: Reply("not modified (If-None-Match matched)", media_type="",
                   headers={"ETag": '"<version>.<n_buckets>.<bucket>"'}),
    },
    errors=(404, 410, 503),
)  # fmt: skip
def get_bucket(version: str, n_buckets: int, bucket: int) -> Response:
    """Every row of the base whose name falls in ``bucket``: a name of the bucket that is not
    in it is a feature the base never saw (scored from its deterministic latent)."""
    ctx = api_context()
    etag = f"{version}.{n_buckets}.{bucket}"
    try:
        blob = bucket_bytes(ctx.bases, ctx.settings, version, n_buckets, bucket)
    except (UnknownVersionError, ValueError) as exc:
        raise version_missing(version, exc) from None
    except BucketNotServedError as exc:
        raise NotFound(str(exc), extra={"n_buckets": exc.n_buckets}) from None
    return immutable_response(blob, etag)


@bp.operation(
    "POST",
    "/v1/base/<version>/rows",
    summary="Exactly the named rows of a base (.flrs), for callers no cache helps",
    auth="token",
    body=RowsRequest,
    parse_body=False,
    replies={200: Reply("the rows the base holds of those named (.flrs)", media_type=FLRS)},
    errors=(404, 410, 413, 503),
)
def post_rows(version: str) -> Response:
    """A named feature missing from the answer is one the base never saw. Prefer the buckets:
    this answer is per request and no cache can share it."""
    ctx = api_context()
    raw = read_json(request)
    limit = ctx.settings.max_base_rows_features
    n = list_length(raw, "features")
    if n > limit:
        raise PayloadTooLarge(
            f"{n} feature names sent, at most {limit} per request "
            f"(FEDLEARN_MAX_BASE_ROWS_FEATURES); send fewer, or fetch buckets",
            errors=[{"field": "features", "message": f"must have at most {limit} names, got {n}"}],
        )
    body = validate(RowsRequest, raw)
    try:
        blob = exact_bytes(ctx.bases, version, body.features)
    except (UnknownVersionError, ValueError) as exc:
        raise version_missing(version, exc) from None
    response = Response(blob, mimetype=FLRS)
    response.headers["Cache-Control"] = "no-store"
    return response
