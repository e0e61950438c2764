"""Validated events into the shard streams: group by shard, one atomic append per shard.

Each shard's append is all-or-nothing (one Lua script that de-duplicates by ``event_id`` and
refuses the whole group when the stream is full). A batch spanning several shards is not
atomic across them: when one shard is full the others are still appended, and the answer says
exactly which events were not (their indices). Retrying the *whole* batch is always safe,
since events already appended come back as duplicates; so a client may keep it simple and
resend everything after ``Retry-After``. Nothing is trained here: the trainers consume the
streams.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fedlearn.store import Store, StreamFullError
from fedlearn.store.keys import MAX_ID_LEN

FORGET = "forget"
REBASE = "rebase"


def forget_entry(user: str) -> dict[str, Any]:
    """The stream entry that tells the shard's trainer to drop ``user`` at this point."""
    return {
        "event_id": f"forget:{uuid.uuid4().hex}",
        "user": user,
        "type": FORGET,
        "ts": time.time(),
    }


def rebase_entry(user: str, version: str, generation: int, share: dict[str, Any]) -> dict[str, Any]:
    """The stream entry that tells the shard's trainer to take ``share`` (a delta's JSON
    form: what promoting base ``version`` of ``generation`` folded in for ``user``) out of
    the user's delta. Its id is fixed by (version, user), so sending it again is a
    duplicate, not a second rebase."""
    event_id = f"rebase:{version}:{user}"
    if len(event_id) > MAX_ID_LEN:  # ids are at most 128 characters; the hash stays fixed
        event_id = f"rebase:{hashlib.blake2b(event_id.encode(), digest_size=16).hexdigest()}"
    return {
        "event_id": event_id,
        "user": user,
        "type": REBASE,
        "base": version,
        "generation": generation,
        "share": share,
        "ts": time.time(),
    }


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    full: list[StreamFullError] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # indices of events of the full shards


def group_by_shard(store: Store, users: Sequence[str]) -> dict[int, list[int]]:
    """Event indices per shard, shards in ascending order, indices in input order."""
    groups: dict[int, list[int]] = {}
    for i, user in enumerate(users):
        groups.setdefault(store.shard_of(user), []).append(i)
    return dict(sorted(groups.items()))


def ingest(
    store: Store, events: Sequence[dict[str, Any]], *, received_at: float | None = None
) -> IngestResult:
    """Append ``events`` (validated dicts) to their shards' streams.

    Each record gets ``received_at`` (epoch seconds), so the trainers can measure the delay
    from ingest to update.
    """
    received_at = time.time() if received_at is None else received_at
    result = IngestResult()
    groups = group_by_shard(store, [e["user"] for e in events])
    for shard, indices in groups.items():
        records = [{**events[i], "received_at": received_at} for i in indices]
        try:
            appended = store.streams.append_events(shard, records)
        except StreamFullError as exc:
            result.full.append(exc)
            result.refused.extend(indices)
            continue
        result.accepted += appended.accepted
        result.duplicates += appended.duplicates
    result.refused.sort()
    return result
