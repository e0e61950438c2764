"""Rounds that heal in seconds: find rounds whose worker died, finish or abandon them, and
retry the abandoned ones as new rounds.

A round's tasks renew its heartbeat while they work (``heartbeat``). A round that is open
(running, publishing, published, or queued while holding the lock) and whose heartbeat is
older than ``stale_s`` has lost its worker: a SIGKILLed Celery main process leaves its tasks
unacknowledged until the broker's visibility timeout and its lock until the lock's TTL. Here
such a round is finished if its base is already current (only the promotion was left), else
abandoned with the reason, its lock released and a retry round created with the same config
(at most ``MAX_ATTEMPTS`` attempts in all, so a round that kills its worker each time stops).
Every step is a compare-and-set on the round's status, so two watchdogs at once (the beat
task and a starting worker) abandon a round once and retry it once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.round import RoundStatus, move
from fedlearn.aggregate.run import abandon_round, create_round, promote_round
from fedlearn.store import Store
from fedlearn.store.rounds import Rounds

MAX_ATTEMPTS = 3


@dataclass
class Healed:
    """What one pass did: rounds abandoned, retry rounds created (to be started), rounds
    finished (their base was current, only the promotion was left); and ``recheck_s``, in how
    many seconds a round still alive now would be stale (``None``: no open round to watch)."""

    abandoned: list[str] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    recheck_s: float | None = None


def heartbeat_age(record: dict[str, Any], now: float) -> float:
    """Seconds since the round last showed life (its heartbeat, else its start or creation)."""
    last = record.get("heartbeat_at") or record.get("started_at") or record["created_at"]
    return now - float(last)


def heal_rounds(store: Store, rounds: Rounds, *, stale_s: float, by: str = "") -> Healed:
    """One pass over the open rounds; see the module's docstring."""
    healed = Healed()
    now = rounds.clock()
    holder = rounds.lock_holder()
    for round_id in rounds.open_rounds():
        record = rounds.get(round_id)
        if record is None:
            continue
        status = record["status"]
        if status == RoundStatus.QUEUED and round_id != holder:
            continue  # waits for a worker and holds nothing up
        age = heartbeat_age(record, now)
        if age < stale_s:
            healed.recheck_s = min(healed.recheck_s or stale_s, stale_s - age)
            continue
        new_version = record.get("new_version")
        if status == RoundStatus.PUBLISHING and store.bases.current_version() == new_version:
            move(rounds, round_id, RoundStatus.PUBLISHED, allowed=[RoundStatus.PUBLISHING])
            status = RoundStatus.PUBLISHED
        if status == RoundStatus.PUBLISHED:
            promote_round(store, rounds, round_id)
            healed.finished.append(round_id)
            continue
        reason = (
            f"no heartbeat for {age:.1f} s (stale_s={stale_s:g}) while {status}: its worker "
            f"died or hangs; abandoned by {by or 'the watchdog'}"
        )
        if not abandon_round(store, rounds, round_id, reason):
            continue  # it moved on meanwhile, or another watchdog was first
        rounds.release_lock(round_id)
        healed.abandoned.append(round_id)
        retry = _retry(rounds, record)
        if retry is not None:
            healed.retries.append(retry)
    return healed


def _retry(rounds: Rounds, record: dict[str, Any]) -> str | None:
    """A new queued round with ``record``'s config, unless it was the last attempt."""
    attempt = int(record.get("attempt", 1))
    if attempt >= MAX_ATTEMPTS:
        rounds.update(record["id"], retried_by=None, retry_note=f"{attempt} attempts: no retry")
        return None
    retry = create_round(
        rounds, AggregationConfig.from_json(record["config"]),
        trigger=f"retry of {record['id']}", attempt=attempt + 1, retry_of=record["id"],
    )  # fmt: skip
    rounds.update(record["id"], retried_by=retry)
    return retry
