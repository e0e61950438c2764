"""Per-user rate limits shared by every API process: GCRA in one Redis script.

GCRA (the generic cell rate algorithm) keeps one number per user and limit, the theoretical
arrival time of the next unit: a request of ``n`` units passes when pushing that time by ``n``
intervals keeps it within ``burst`` intervals of now. It is a token bucket of ``burst`` tokens
refilled at ``per_s`` a second, without a refill timer. The key lives in the user's shard and
expires once the bucket is full again, so idle users cost nothing.

The same script can first check the caller's token against the user's revocation record
(``store/revocations.py``): an API request that is rate-limited then makes one Redis round
trip for both checks instead of two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fedlearn.store import keys
from fedlearn.store.scripts import RATE_LIMIT


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_s`` units a second with bursts of up to ``burst`` units; ``per_s == 0``: no limit."""

    per_s: float
    burst: int

    def __post_init__(self) -> None:
        if not math.isfinite(self.per_s) or self.per_s < 0:
            raise ValueError(f"per_s must be a finite number >= 0, got {self.per_s!r}")
        if not isinstance(self.burst, int) or isinstance(self.burst, bool) or self.burst < 1:
            raise ValueError(f"burst must be a positive int, got {self.burst!r}")

    @property
    def limited(self) -> bool:
        return self.per_s > 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a request passed; if not, how long to wait before the same request would, or
    when the token's user was revoked (the token predates it: nothing was counted)."""

    allowed: bool
    retry_after_s: float = 0.0
    revoked_at: float | None = None


ALLOWED = Verdict(True)


class RateLimiter:
    """Counts units (events, rank calls) per user and limit kind, across all processes."""

    def __init__(self, client: Any, n_shards: int) -> None:
        self.n_shards = n_shards
        self._script = client.register_script(RATE_LIMIT)

    def take(
        self, kind: str, user: str, rate: Rate, units: int = 1, *, issued_at: float | None = None
    ) -> Verdict:
        """Count ``units`` against ``user``'s ``kind`` limit if they fit, else count nothing
        and say how long to wait. ``units`` larger than the burst can never pass: callers
        check that first (it is a request too large, not too early). With ``issued_at`` (a
        token's issue time), a token issued at or before ``user``'s revocation counts nothing
        and gets a verdict carrying ``revoked_at``, in the same round trip."""
        if not rate.limited:
            return ALLOWED
        if not isinstance(units, int) or isinstance(units, bool) or not 1 <= units <= rate.burst:
            raise ValueError(f"units must be an int in 1..{rate.burst} (the burst), got {units!r}")
        shard = keys.shard_of(user, self.n_shards)
        token = "" if issued_at is None else repr(float(issued_at))  # repr: exact in Lua too
        allowed, value = self._script(
            keys=[keys.rate(shard, kind, user), keys.revoked(shard, user)],
            args=[1000.0 / rate.per_s, rate.burst, units, token],
        )
        if int(allowed) == 1:
            return ALLOWED
        if int(allowed) == -1:
            return Verdict(False, revoked_at=float(value))
        return Verdict(False, float(value) / 1000.0)
