"""The map step of a round: one shard's users' changes since their last contribution.

It reads each user's delta record (one HMGET: the delta, its last event and its event count
come from the same instant, however the trainer writes meanwhile) and the user's snapshot,
and writes the record it read, unchanged, as the user's snapshot *candidate*: that exact
state becomes the snapshot once the round is published, so nothing a user learns during the
round is lost or counted twice. Each attempt writes its own candidates; the first attempt to
commit its partial result wins and a duplicate (a retried or re-sent task) drops its own.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.partials import PartialBuilder
from fedlearn.aggregate.rounds import user_changes
from fedlearn.aggregate.snapshots import Snapshot
from fedlearn.model import Delta, ModelFormatError
from fedlearn.store import Store
from fedlearn.store.rounds import Rounds

log = logging.getLogger(__name__)

CHUNK = 500  # users per read: two round-trips (deltas, snapshots) per chunk


def _chunks(users: Iterable[str], size: int) -> Iterator[list[str]]:
    seen: set[str] = set()  # SSCAN may repeat a user
    chunk: list[str] = []
    for user in users:
        if user in seen:
            continue
        seen.add(user)
        chunk.append(user)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def map_shard(
    store: Store, rounds: Rounds, round_id: str, shard: int, *, worker: str = ""
) -> dict[str, Any]:
    """Compute and store ``shard``'s partial result for the running round ``round_id``.

    Returns the partial's meta (users, events, rows, worker, seconds). A round that is not
    running any more is left alone; a shard already done returns the stored meta.
    """
    record = rounds.get(round_id)
    if record is None:
        raise LookupError(f"round {round_id!r} does not exist; start rounds with begin_round")
    if record["status"] != "running":
        return {"shard": shard, "skipped": f"round is {record['status']}"}
    existing = rounds.partial_meta(shard, round_id)
    if existing is not None:
        return {**existing, "duplicate": True}
    config = AggregationConfig.from_json(record["config"])
    rounds.renew_lock(round_id, config.lock_ttl_s * 1000)
    generation, k = int(record["generation"]), int(record["n_factors"])
    strategy = config.make_strategy()
    builder = PartialBuilder(k, needs_values=strategy.needs_values)
    attempt = uuid.uuid4().hex[:12]
    started = time.perf_counter()
    stale = corrupt = 0
    for users in _chunks(store.deltas.users(shard), CHUNK):
        records = store.deltas.get_many(shard, users)
        snapshots = rounds.snapshots(shard, list(records))
        pairs: list[tuple[Delta, Delta | None, int]] = []
        candidates: dict[str, bytes] = {}
        for user, rec in records.items():
            if rec.generation != generation:
                stale += 1  # an old generation's clone: it restarts, it does not contribute
                continue
            try:
                snap = Snapshot.from_bytes(snapshots[user]) if user in snapshots else None
                if snap is not None and snap.generation != generation:
                    snap = None
                if snap is not None and snap.last_event >= rec.last_event:
                    continue  # nothing learned since the last contribution
                delta = Delta.from_bytes(rec.delta)
                old = Delta.from_bytes(snap.delta) if snap is not None else None
            except (ModelFormatError, ValueError) as exc:
                # one unreadable record must not stop every round: count it, log it, go on
                corrupt += 1
                log.warning("shard %d, user %r: skipped, unreadable delta: %s", shard, user, exc)
                continue
            if delta.n_factors != k or (old is not None and old.n_factors != k):
                stale += 1
                continue
            pairs.append((delta, old, rec.events - (snap.events if snap else 0)))
            candidates[user] = Snapshot(
                generation, rec.last_event, rec.events, rec.delta
            ).to_bytes()
        if pairs:
            changes = user_changes(
                pairs, k, builder.table, clip_norm=config.clip_norm, max_weight=config.max_weight
            )
            builder.add(changes)
            rounds.write_candidates(shard, round_id, attempt, candidates)
    meta = {
        "shard": shard,
        **builder.meta(),
        "stale": stale,
        "corrupt": corrupt,
        "worker": worker,
        "attempt": attempt,
        "seconds": round(time.perf_counter() - started, 4),
    }
    fields = builder.blobs(config.buckets)
    fields["meta"] = orjson.dumps(meta)
    winner = rounds.commit_partial(shard, round_id, attempt, fields)
    if winner != attempt:
        rounds.drop_candidates(shard, round_id, attempt)
        return {**(rounds.partial_meta(shard, round_id) or {}), "duplicate": True}
    return meta
