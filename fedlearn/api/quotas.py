"""What one user token may ask of the service: rate limits (429) and the size of a rank call.

User tokens are limited per user, across every API process (the limit lives in Redis, see
``store/ratelimit.py``); admin tokens are not (they are the operator's and the app backend's).
A refused request has written nothing; ``Retry-After`` is rounded up to whole seconds, so a
client that waits that long is let through. The rate check also settles the token's revocation
check that the route wrapper left to it (``routing.py``), in the same Redis round trip.
"""

from __future__ import annotations

import math

from fedlearn.api.auth import Principal, refuse_revoked
from fedlearn.api.context import ApiContext
from fedlearn.api.errors import PayloadTooLarge, RateLimited, ValidationFailed
from fedlearn.api.routing import settle_revocation, take_revocation_due
from fedlearn.api.schemas import RankRequest
from fedlearn.config import Settings
from fedlearn.store.predictions import PredictionQuota
from fedlearn.store.ratelimit import Rate

UNITS = {"events": "events", "rank": "rank calls"}


def rate_of(settings: Settings, kind: str) -> Rate:
    if kind == "events":
        return Rate(settings.rate_events_per_s, settings.rate_events_burst)
    return Rate(settings.rate_rank_per_s, settings.rate_rank_burst)


def enforce_rate(ctx: ApiContext, caller: Principal, kind: str, units: int = 1) -> None:
    """Count ``units`` of ``kind`` (``events`` or ``rank``) against a user token's limit;
    :class:`RateLimited` (nothing counted) when they do not fit now; :class:`Unauthorized`
    (nothing counted) when the token was revoked and that check was still due."""
    rate = rate_of(ctx.settings, kind)
    if caller.is_admin or not rate.limited:
        settle_revocation(caller)
        return
    setting = f"FEDLEARN_RATE_{kind.upper()}_BURST"
    if units > rate.burst:  # would never fit: waiting cannot help, so this is not a 429
        raise ValidationFailed(
            f"the request holds {units} {UNITS[kind]}, more than a user token may send at once "
            f"({rate.burst}, {setting}); split it; nothing was written",
            errors=[{"field": kind, "message": f"must have at most {rate.burst} items"}],
        )
    issued_at = caller.issued_at if take_revocation_due() else None
    verdict = ctx.limits.take(kind, caller.sub, rate, units, issued_at=issued_at)
    refuse_revoked(caller, verdict.revoked_at)
    if verdict.allowed:
        return
    wait_s = max(1, math.ceil(verdict.retry_after_s))
    raise RateLimited(
        f"user {caller.sub!r} is over its rate limit of {rate.per_s:g} {UNITS[kind]} a second "
        f"(bursts of {rate.burst}; FEDLEARN_RATE_{kind.upper()}_PER_S, {setting}); nothing was "
        f"written; retry after {wait_s} s",
        headers={"Retry-After": str(wait_s)},
    )


def prediction_quota(settings: Settings) -> PredictionQuota:
    """How many prediction records (and bytes of them) one user keeps at most."""
    return PredictionQuota(settings.prediction_max_per_user, settings.prediction_max_bytes_per_user)


def rank_cells(body: RankRequest) -> int:
    """Feature cells a rank call asks for: per distinct candidate, its context and features."""
    context = len(body.context or {})
    features: dict[str, int] = {}
    for item in body.items:  # the first listing of an id is the one scored
        features.setdefault(item.id, len(item.features or {}))
    return sum(context + n for n in features.values())


def enforce_rank_size(settings: Settings, body: RankRequest) -> None:
    """:class:`PayloadTooLarge` when the rank call asks for more cells than allowed."""
    cells = rank_cells(body)
    limit = settings.max_rank_cells
    if cells > limit:
        raise PayloadTooLarge(
            f"this rank call asks for {cells} feature cells (per candidate: its "
            f"{len(body.context or {})} context values plus its own features), at most {limit} "
            f"are accepted (FEDLEARN_MAX_RANK_CELLS); send fewer candidates or less context",
            errors=[{"field": "items", "message": f"{cells} cells, at most {limit}"}],
        )
