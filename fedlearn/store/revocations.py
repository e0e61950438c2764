"""Token revocation by user: forgetting a user voids every token issued to them before.

Tokens are signed and checked without a database, so the only way to stop one early is a
record the API consults: the time the user was forgotten. It is kept as long as a token can
live (``max_token_ttl_s``); after that every earlier token has expired anyway.
"""

from __future__ import annotations

import time
from typing import Any

from fedlearn.store import keys


class Revocations:
    """When each forgotten user was revoked, in the user's shard."""

    def __init__(self, client: Any, n_shards: int) -> None:
        self._r = client
        self.n_shards = n_shards

    def _key(self, user: str) -> str:
        return keys.revoked(keys.shard_of(user, self.n_shards), user)

    def revoke(self, user: str, *, keep_s: int, at: float | None = None) -> float:
        """Void ``user``'s tokens issued before ``at`` (default now); remembered ``keep_s``
        seconds. Returns the revocation time."""
        if not isinstance(keep_s, int) or isinstance(keep_s, bool) or keep_s < 1:
            raise ValueError(f"keep_s must be a positive int of seconds, got {keep_s!r}")
        at = time.time() if at is None else at
        self._r.set(self._key(user), repr(at), ex=keep_s)
        return at

    def revoked_at(self, user: str) -> float | None:
        """When ``user``'s tokens were last revoked, or ``None``."""
        raw = self._r.get(self._key(user))
        return float(raw) if raw is not None else None
