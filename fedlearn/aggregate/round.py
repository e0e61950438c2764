"""A round's lifecycle: its statuses and the moves allowed between them, in one place.

``queued`` -> ``running`` (holds the lock) -> ``publishing`` -> ``published`` -> ``done``;
or ``rejected``, ``skipped``, ``failed``, ``abandoned`` (see ``run``). The store keeps the
status as its plain string value and moves it atomically (``Rounds.transition``, a
compare-and-set that does not know this graph: store/ never imports aggregate/); :func:`move`
is the one way the aggregation code changes a status, and it refuses a move the graph lacks
before any I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedlearn.store.rounds import Rounds


class RoundStatus(StrEnum):
    """The states of a round. ``TRANSITIONS`` says which status may follow which."""

    QUEUED = "queued"
    RUNNING = "running"  # holds the lock; its tasks renew ``heartbeat_at`` while they work
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    ABANDONED = "abandoned"
    REJECTED = "rejected"


_S = RoundStatus
TRANSITIONS: dict[RoundStatus, frozenset[RoundStatus]] = {
    _S.QUEUED: frozenset({_S.RUNNING, _S.REJECTED, _S.FAILED, _S.ABANDONED}),
    # running -> rejected: the candidate failed its shadow check (``shadow``)
    _S.RUNNING: frozenset({_S.PUBLISHING, _S.SKIPPED, _S.FAILED, _S.ABANDONED, _S.REJECTED}),
    _S.PUBLISHING: frozenset({_S.PUBLISHED, _S.FAILED, _S.ABANDONED}),
    _S.PUBLISHED: frozenset({_S.DONE}),
}
# Statuses a round never leaves: it is no longer open, nothing waits for it.
TERMINAL = frozenset(s for s in RoundStatus if not TRANSITIONS.get(s))


def move(
    rounds: Rounds,
    round_id: str,
    to: RoundStatus | str,
    *,
    allowed: Iterable[RoundStatus | str] = (),
    **fields: Any,
) -> tuple[bool, str | None]:
    """Move the round to status ``to`` (setting ``fields``) if its status is one of
    ``allowed`` (default: every status ``TRANSITIONS`` lets move to ``to``). Returns
    (moved, the status before; ``None`` when the round does not exist)."""
    target = RoundStatus(to)
    sources = {s for s, targets in TRANSITIONS.items() if target in targets}
    chosen = {RoundStatus(s) for s in allowed} or sources
    if not chosen <= sources:
        illegal = sorted(chosen - sources)
        raise ValueError(f"a round cannot move from {illegal} to {to!r}; see TRANSITIONS")
    return rounds.transition(
        round_id, target, allowed=sorted(chosen), terminal=target in TERMINAL, **fields
    )
