"""The one exception tree of the store layer.

Every error carries the values it is about as attributes (so the API can turn a
``StreamFullError`` into a 429 with a ``Retry-After``, and the trainer can log which lease it
lost), and its message names them and says what to do.
"""

from __future__ import annotations

import time
from typing import Any


class StoreError(Exception):
    """Base of every error raised by ``fedlearn.store``."""

    _values: tuple[Any, ...] | None = None

    def _keep(self, **values: Any) -> None:
        """Keep ``values`` as attributes, in order: the error is rebuilt from them when it is
        unpickled (errors cross processes in Celery results)."""
        for name, value in values.items():
            setattr(self, name, value)
        self._values = tuple(values.values())

    def __reduce__(self) -> Any:
        if self._values is None:
            return super().__reduce__()
        return (type(self), self._values)


class StreamFullError(StoreError):
    """A shard's stream has no room for a batch; nothing of the batch was written.

    The caller answers 429: the trainers are behind, and a retry later (same ``event_id``s) is
    harmless.
    """

    def __init__(self, shard: int, length: int, incoming: int, maxlen: int) -> None:
        self._keep(shard=shard, length=length, incoming=incoming, maxlen=maxlen)
        super().__init__(
            f"shard {shard}: stream holds {length} events, {incoming} more would exceed its "
            f"limit of {maxlen}; nothing was written, retry later (the trainers are behind)"
        )


class LeaseLostError(StoreError):
    """A trainer tried to write to a shard whose lease it no longer holds; nothing was written.

    The trainer must drop what it holds in memory for that shard: another owner may have
    applied events since.
    """

    def __init__(self, shard: int, owner: str, holder: str | None) -> None:
        self._keep(shard=shard, owner=owner, holder=holder)
        held = "nobody" if holder is None else repr(holder)
        super().__init__(
            f"shard {shard}: lease is held by {held}, not by {owner!r}; nothing was written, "
            f"drop this shard's state and acquire the lease again"
        )


class StaleCommitError(StoreError):
    """A commit would move a user's ``last_event`` backwards (an event applied twice).

    This is a bug in the caller (it did not skip an already applied, redelivered entry);
    the commit was refused whole.
    """

    def __init__(self, shard: int, user: str, stored: str, new: str) -> None:
        self._keep(shard=shard, user=user, stored=stored, new=new)
        super().__init__(
            f"shard {shard}, user {user!r}: commit with last_event {new} but {stored} is "
            f"already applied; skip entries whose id is <= the stored last_event"
        )


class UnknownVersionError(StoreError, KeyError):
    """A base version that was never published was asked for."""

    def __init__(self, version: str) -> None:
        self._keep(version=version)
        super().__init__(version)

    def __str__(self) -> str:
        return f"base version {self.version!r} does not exist; publish it first (put_base)"


class PrunedVersionError(UnknownVersionError):
    """A base version that was published once but whose bytes retention deleted.

    A subclass of ``UnknownVersionError``: whoever only needs "not there" keeps working; whoever
    can say more (the API answers 410 Gone) catches this first.
    """

    def __init__(self, version: str, pruned_at: float) -> None:
        self._keep(version=version, pruned_at=pruned_at)
        KeyError.__init__(self, version)

    @property
    def when(self) -> str:
        """``pruned_at`` for people (UTC)."""
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.pruned_at))

    def __str__(self) -> str:
        return (
            f"base version {self.version!r} was pruned at {self.when}: retention keeps the current "
            f"version, the FEDLEARN_BASE_KEEP_VERSIONS published before it and those still in "
            f"use; use the current version (`fedlearn base list` shows what is kept)"
        )


class VersionInUseError(StoreError):
    """Pruning was asked for the current base version; nothing was deleted."""

    def __init__(self, version: str) -> None:
        self._keep(version=version)
        super().__init__(
            f"base version {version!r} is current and cannot be pruned; roll back to another "
            f"version first"
        )


class VersionExistsError(StoreError):
    """A base version id is already taken by different bytes; versions are immutable."""

    def __init__(self, version: str) -> None:
        self._keep(version=version)
        super().__init__(
            f"base version {version!r} already exists with different content; base versions "
            f"are immutable, publish under a new version id"
        )


class VersionConflictError(StoreError):
    """``set_current(..., expected=...)`` found another current version (a concurrent publish)."""

    def __init__(self, version: str, expected: str | None, actual: str | None) -> None:
        self._keep(version=version, expected=expected, actual=actual)
        super().__init__(
            f"cannot make {version!r} current: expected current version {expected!r}, found "
            f"{actual!r} (someone else published meanwhile); rebase on {actual!r} and retry"
        )


class ShardCountError(StoreError):
    """This process was configured with another shard count than the one the deployment's
    Redis records: its users' events and deltas would be looked for in the wrong shards."""

    def __init__(self, recorded: int | None, configured: int) -> None:
        self._keep(recorded=recorded, configured=configured)
        if recorded is None:  # data from before the count was recorded, of another layout
            super().__init__(
                f"this Redis holds shard streams laid out for another count than "
                f"FEDLEARN_N_SHARDS={configured} (and no recorded count: it predates the "
                f"record); set FEDLEARN_N_SHARDS to the count it ran with (the default was 8)"
            )
            return
        super().__init__(
            f"this Redis holds a deployment of {recorded} shards but FEDLEARN_N_SHARDS="
            f"{configured}; set FEDLEARN_N_SHARDS={recorded} (the count is fixed for a "
            f"deployment: grow by adding trainers, docs/OPERATIONS.md 'Shards')"
        )
