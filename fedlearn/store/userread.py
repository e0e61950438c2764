"""What serving one user's model reads from Redis, in one round trip.

``GET /v1/users/{user}/model`` needs four records that live in three repositories: the
token's revocation (``revocations``), the current base's pointer (``bases``), the user's delta
record (``deltas``) and the rebase notes of the promotions the user's trainer may not have
applied yet (``streams``). Read one by one they were three or four round trips per request,
each a send and a wait for a core on a busy machine. Here they go in one pipeline without
``MULTI``: one round trip on a single Redis; on a Redis Cluster, where the pointer's slot
(``{base}``) and the user's (``{s<n>}``) may be on different nodes, redis-py's cluster
pipeline sends each node its part (no script could span the two slots).

The notes are asked for *before* the delta record: a trainer that commits past a rebase entry
deletes its note afterwards, so a note read first is never missing for a record read after it
that still predates the entry (read the other way round, a commit in between would serve the
share twice). Which versions' notes to ask for is known only from the current base's lineage;
the caller passes its best guess (the lineage of the base it served last) and, when the pointer
has moved to a base listing others (``missing_notes``), reads the notes and the record again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedlearn.store import keys
from fedlearn.store.deltas import _FIELDS, DeltaRecord, _record
from fedlearn.store.streamid import StreamId

# A rebase note: the stream id just before the user's rebase entry, and the share's JSON.
Note = tuple[StreamId, bytes]


@dataclass(frozen=True, slots=True)
class UserRead:
    """One user's state as the API serves it, read in one round trip."""

    user: str
    current: str | None  # the current base version (None before the first publish)
    record: DeltaRecord | None  # the user's delta record, if any
    notes: Mapping[str, Note | None] = field(default_factory=dict)  # per version asked
    revoked_at: float | None = None  # when the user's tokens were revoked (if asked)

    def missing_notes(self, versions: Sequence[str]) -> list[str]:
        """Of ``versions``, those whose notes this read did not ask for."""
        return [v for v in versions if v not in self.notes]


def parse_note(raw: bytes | None) -> Note | None:
    """A stored note ``<stream id before>|<share JSON>``, or ``None``."""
    if raw is None:
        return None
    before, _, share = bytes(raw).partition(b"|")
    return StreamId.parse(before), share


class UserReads:
    """Reads one user's revocation, the current base, the delta record and rebase notes."""

    def __init__(self, client: Any, n_shards: int) -> None:
        self._r = client
        self.n_shards = n_shards

    def read(
        self, user: str, *, versions: Sequence[str] = (), revocation: bool = False
    ) -> UserRead:
        """``user``'s state: the current base's pointer, the delta record, the rebase notes of
        ``versions`` and, with ``revocation``, when the user's tokens were revoked."""
        shard = keys.shard_of(user, self.n_shards)
        versions = list(dict.fromkeys(versions))
        pipe = self._r.pipeline(transaction=False)
        if revocation:
            pipe.get(keys.revoked(shard, user))
        pipe.get(keys.base_current())
        for version in versions:  # before the record: see the module's docstring
            pipe.hget(keys.rebase_notes(shard, version), user)
        pipe.hmget(keys.delta(shard, user), _FIELDS)
        replies = pipe.execute()
        revoked = replies.pop(0) if revocation else None
        current = replies[0]
        return UserRead(
            user=user,
            current=None if current is None else current.decode("utf-8"),
            record=_record(user, replies[-1]),
            notes={v: parse_note(raw) for v, raw in zip(versions, replies[1:-1], strict=True)},
            revoked_at=None if revoked is None else float(revoked),
        )
