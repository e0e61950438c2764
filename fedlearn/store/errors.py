"""The one exception tree of the store layer.

Every error carries the values it is about as attributes (so the API can turn a
``StreamFullError`` into a 429 with a ``Retry-After``, and the trainer can log which lease it
lost), and its message names them and says what to do.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error raised by ``fedlearn.store``."""


class RedisNotFoundError(StoreError):
    """No redis-server binary could be found to start an embedded Redis."""


class EmbeddedRedisError(StoreError):
    """An embedded redis-server did not start, did not answer, or did not stop."""


class StreamFullError(StoreError):
    """A shard's stream has no room for a batch; nothing of the batch was written.

    The caller answers 429: the trainers are behind, and a retry later (same ``event_id``s) is
    harmless.
    """

    def __init__(self, shard: int, length: int, incoming: int, maxlen: int) -> None:
        self.shard = shard
        self.length = length
        self.incoming = incoming
        self.maxlen = maxlen
        super().__init__(
            f"shard {shard}: stream holds {length} events, {incoming} more would exceed its "
            f"limit of {maxlen}; nothing was written, retry later (the trainers are behind)"
        )

    def __reduce__(self) -> tuple[type[StreamFullError], tuple[int, int, int, int]]:
        return (type(self), (self.shard, self.length, self.incoming, self.maxlen))


class LeaseLostError(StoreError):
    """A trainer tried to write to a shard whose lease it no longer holds; nothing was written.

    The trainer must drop what it holds in memory for that shard: another owner may have
    applied events since.
    """

    def __init__(self, shard: int, owner: str, holder: str | None) -> None:
        self.shard = shard
        self.owner = owner
        self.holder = holder
        held = "nobody" if holder is None else repr(holder)
        super().__init__(
            f"shard {shard}: lease is held by {held}, not by {owner!r}; nothing was written, "
            f"drop this shard's state and acquire the lease again"
        )

    def __reduce__(self) -> tuple[type[LeaseLostError], tuple[int, str, str | None]]:
        return (type(self), (self.shard, self.owner, self.holder))


class StaleCommitError(StoreError):
    """A commit would move a user's ``last_event`` backwards (an event applied twice).

    This is a bug in the caller (it did not skip an already applied, redelivered entry);
    the commit was refused whole.
    """

    def __init__(self, shard: int, user: str, stored: str, new: str) -> None:
        self.shard = shard
        self.user = user
        self.stored = stored
        self.new = new
        super().__init__(
            f"shard {shard}, user {user!r}: commit with last_event {new} but {stored} is "
            f"already applied; skip entries whose id is <= the stored last_event"
        )

    def __reduce__(self) -> tuple[type[StaleCommitError], tuple[int, str, str, str]]:
        return (type(self), (self.shard, self.user, self.stored, self.new))


class UnknownVersionError(StoreError, KeyError):
    """A base version that was never published was asked for."""

    def __init__(self, version: str) -> None:
        self.version = version
        super().__init__(version)

    def __str__(self) -> str:
        return f"base version {self.version!r} does not exist; publish it first (put_base)"

    def __reduce__(self) -> tuple[type[UnknownVersionError], tuple[str]]:
        return (type(self), (self.version,))


class VersionExistsError(StoreError):
    """A base version id is already taken by different bytes; versions are immutable."""

    def __init__(self, version: str) -> None:
        self.version = version
        super().__init__(
            f"base version {version!r} already exists with different content; base versions "
            f"are immutable, publish under a new version id"
        )

    def __reduce__(self) -> tuple[type[VersionExistsError], tuple[str]]:
        return (type(self), (self.version,))


class VersionConflictError(StoreError):
    """``set_current(..., expected=...)`` found another current version (a concurrent publish)."""

    def __init__(self, version: str, expected: str | None, actual: str | None) -> None:
        self.version = version
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"cannot make {version!r} current: expected current version {expected!r}, found "
            f"{actual!r} (someone else published meanwhile); rebase on {actual!r} and retry"
        )

    def __reduce__(self) -> tuple[type[VersionConflictError], tuple[str, str | None, str | None]]:
        return (type(self), (self.version, self.expected, self.actual))
