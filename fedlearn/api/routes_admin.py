"""Administration: tokens now; aggregation rounds and base rollback join here later."""

from __future__ import annotations

from flask import Response

from fedlearn.api.auth import issue_token
from fedlearn.api.context import api_context
from fedlearn.api.errors import Unavailable, ValidationFailed
from fedlearn.api.routing import ApiBlueprint, Reply, json_response
from fedlearn.api.schemas import AdminTokenRequest, TokenRequest, TokenResponse
from fedlearn.config import ConfigError

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
