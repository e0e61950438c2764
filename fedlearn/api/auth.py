"""Bearer tokens: signed, expiring claims ``{"sub": user | "*admin*", "role": "user" | "admin"}``.

Tokens are itsdangerous ``URLSafeTimedSerializer`` signatures over a small JSON claim, so the
API checks them without a database round-trip. The serializer gets a *list* of keys, oldest
first: it signs with the last and accepts any, which is key rotation (add a new key, keep the
old one in ``FEDLEARN_PREVIOUS_SECRET_KEYS`` until its tokens have expired). Each token carries
its own expiry (``exp``), so a user token and an admin token can live differently long.

A user token may read and write only its own user; an admin token anything. With
``FEDLEARN_AUTH=off`` (local development only) every request acts as admin.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Literal

from flask import Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from fedlearn.api.errors import Forbidden, Unauthorized
from fedlearn.config import Settings

ADMIN_SUB = "*admin*"
SALT = "fedlearn.api.token.v1"
Role = Literal["user", "admin"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's subject and role, and when the token was issued."""

    sub: str
    role: Role
    issued_at: float = 0.0

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


ANONYMOUS_ADMIN = Principal(ADMIN_SUB, "admin")  # every caller when auth is off


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: float
    sub: str
    role: Role


# Serializers by the id of the (frozen) Settings they were built from, with that object, so an
# id reused after it is gone never matches. Without it every request built one and read the
# keys again: with no FEDLEARN_SECRET_KEY set (``fedlearn up``) that is a file read each time.
_SERIALIZERS: dict[int, tuple[Settings, URLSafeTimedSerializer]] = {}
_KEEP_SERIALIZERS = 16  # one per app in a process; tests make many


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    cached = _SERIALIZERS.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = (settings, URLSafeTimedSerializer(settings.signing_keys(), salt=SALT))
        if len(_SERIALIZERS) >= _KEEP_SERIALIZERS:
            _SERIALIZERS.clear()
        _SERIALIZERS[id(settings)] = cached
    return cached[1]


def issue_token(
    settings: Settings, user: str | None = None, admin: bool = False, ttl_s: int | None = None
) -> IssuedToken:
    """A signed token for ``user`` (or an admin token with ``admin=True``).

    ``ttl_s`` defaults to the settings' user or admin TTL and may not exceed
    ``max_token_ttl_s``. Raises ``ValueError`` naming the argument that is wrong.
    """
    if admin and user is not None:
        raise ValueError(f"give either user ({user!r}) or admin=True, not both")
    if not admin:
        if not isinstance(user, str) or not user or len(user) > 128:
            raise ValueError(f"user must be a user id of 1..128 characters, got {user!r}")
        if _CONTROL.search(user):
            raise ValueError(f"user must not contain control characters, got {user!r}")
    if ttl_s is None:
        ttl_s = settings.admin_token_ttl_s if admin else settings.user_token_ttl_s
    if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or ttl_s < 1:
        raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
    if ttl_s > settings.max_token_ttl_s:
        raise ValueError(
            f"ttl_s={ttl_s} exceeds the maximum of {settings.max_token_ttl_s} seconds "
            f"(FEDLEARN_MAX_TOKEN_TTL_S)"
        )
    sub, role = (ADMIN_SUB, "admin") if admin else (user, "user")
    assert sub is not None
    now = time.time()
    expires_at = math.floor(now) + ttl_s
    # iat to the microsecond: a token minted right after a revocation must stay valid
    claims = {"sub": sub, "role": role, "exp": expires_at, "iat": now}
    token = _serializer(settings).dumps(claims)
    return IssuedToken(token, float(expires_at), sub, role)  # type: ignore[arg-type]


def verify_token(settings: Settings, token: str, *, now: float | None = None) -> Principal:
    """The principal of a valid token; :class:`Unauthorized` saying why one is not."""
    try:
        claims, signed_at = _serializer(settings).loads(
            token, max_age=settings.max_token_ttl_s, return_timestamp=True
        )
    except SignatureExpired:
        raise Unauthorized(
            "bearer token is expired (older than the maximum token lifetime); get a new one",
            error="invalid_token",
        ) from None
    except BadSignature:
        raise Unauthorized(
            "bearer token is invalid (bad signature: forged, truncated, or signed with a key "
            "this server no longer accepts); get a new one",
            error="invalid_token",
        ) from None
    if not isinstance(claims, dict) or not {"sub", "role", "exp"} <= claims.keys():
        raise Unauthorized("bearer token is invalid (its claims are incomplete)")
    role, sub, exp = claims["role"], claims["sub"], claims["exp"]
    if role not in ("user", "admin") or not isinstance(sub, str) or not isinstance(exp, int):
        raise Unauthorized("bearer token is invalid (its claims are malformed)")
    now = time.time() if now is None else now
    if exp <= now:
        raise Unauthorized(
            f"bearer token expired {now - exp:.0f} s ago (at {exp}); get a new one",
            error="invalid_token",
        )
    issued_at = claims.get("iat")
    if not isinstance(issued_at, int | float) or isinstance(issued_at, bool):
        issued_at = signed_at.timestamp()  # tokens minted before "iat" existed
    return Principal(sub, role, float(issued_at))


def refuse_revoked(principal: Principal, revoked_at: float | None) -> None:
    """:class:`Unauthorized` when ``principal``'s token was issued before its user was
    forgotten (``revoked_at``, from ``DELETE /v1/users/{user}``)."""
    if revoked_at is not None and principal.issued_at <= revoked_at:
        raise Unauthorized(
            f"bearer token was revoked: user {principal.sub!r} was deleted after it was issued; "
            f"get a new one",
            error="invalid_token",
        )


def authenticate(settings: Settings, request: Request) -> Principal:
    """The caller of ``request``; :class:`Unauthorized` when the token is missing or bad."""
    if not settings.auth:
        return ANONYMOUS_ADMIN
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>' (get one with "
            "`fedlearn token USER`)",
            error="invalid_request",
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            f"Authorization header must be 'Bearer <token>', got scheme {scheme[:20]!r}",
            error="invalid_request",
        )
    return verify_token(settings, token.strip())


def require_user(principal: Principal, user: str) -> None:
    """Allow admins, and users acting on themselves; :class:`Forbidden` otherwise."""
    if principal.is_admin or principal.sub == user:
        return
    raise Forbidden(
        f"this token belongs to user {principal.sub!r} and may not act on user {user!r}"
    )


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden(f"this needs an admin token; the token belongs to user {principal.sub!r}")
