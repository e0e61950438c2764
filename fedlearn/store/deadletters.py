"""Dead letters: what a trainer set aside instead of stopping on it, with the reason.

A poison entry (a payload that is no event) or a user whose stored delta or gate cannot be
read would stop a trainer on every restart if it raised. Instead the trainer writes it to the
shard's dead-letter stream (``keys.dead_letters``) in the same atomic commit that acknowledges
the batch (``commit_batch(dead_letters=...)``), so it is neither lost nor seen twice. The
stream is bounded (``MAXLEN ~``); operators list it with ``fedlearn dead-letters``.

Kinds (also the ``reason`` label of ``fedlearn_dead_letters_total``):
``invalid_entry`` (``raw`` is the entry's payload), ``unreadable_delta`` and
``unreadable_gate`` (``raw`` is the stored record; the user restarts that part from scratch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fedlearn.store import keys
from fedlearn.store.entries import Rejected, decode_id

MAXLEN = 10_000  # per shard, approximately (XADD MAXLEN ~): the newest are kept
MAX_LIST = 10_000
KINDS = ("invalid_entry", "unreadable_delta", "unreadable_gate")
_FIELDS = ("kind", "reason", "entry_id", "user", "raw", "at")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One set-aside record. ``id`` is its id in the dead-letter stream once written."""

    kind: str
    reason: str
    entry_id: str = ""
    user: str = ""
    raw: bytes = b""
    at: float = field(default_factory=time.time)
    shard: int | None = None
    id: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dead letter kind must be one of {KINDS}, got {self.kind!r}")

    @classmethod
    def of_rejected(cls, rejected: Rejected) -> DeadLetter:
        return cls("invalid_entry", rejected.reason, entry_id=rejected.id, raw=rejected.raw)

    def args(self) -> list[Any]:
        """The values of the commit script's XADD, in ``_FIELDS`` order."""
        return [self.kind, self.reason, self.entry_id, self.user, self.raw, repr(self.at)]

    def describe(self) -> str:
        where = f"entry {self.entry_id}" if self.entry_id else f"user {self.user!r}"
        return f"{self.kind} ({where}): {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "id": self.id,
            "kind": self.kind,
            "reason": self.reason,
            "entry_id": self.entry_id or None,
            "user": self.user or None,
            "at": self.at,
            "raw": self.raw.decode("utf-8", "backslashreplace"),
        }


def _parse(shard: int, entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    text = {name: fields.get(name.encode(), b"") for name in _FIELDS}
    return DeadLetter(
        kind=text["kind"].decode(),
        reason=text["reason"].decode("utf-8", "replace"),
        entry_id=text["entry_id"].decode("utf-8", "replace"),
        user=text["user"].decode("utf-8", "replace"),
        raw=text["raw"],
        at=float(text["at"] or 0),
        shard=shard,
        id=decode_id(entry_id),
    )


class DeadLetters:
    """Read the shards' dead-letter streams (writes go through ``commit_batch``)."""

    def __init__(self, client: Any, n_shards: int) -> None:
        self._r = client
        self.n_shards = n_shards

    def count(self, shard: int) -> int:
        keys.check_shard(shard, self.n_shards)
        return int(self._r.xlen(keys.dead_letters(shard)))

    def latest(self, shard: int, *, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters of ``shard``, newest first."""
        keys.check_shard(shard, self.n_shards)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST:
            raise ValueError(f"limit must be an int in 1..{MAX_LIST}, got {limit!r}")
        reply = self._r.xrevrange(keys.dead_letters(shard), count=limit)
        return [_parse(shard, entry_id, fields) for entry_id, fields in reply]
