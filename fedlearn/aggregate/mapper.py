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

from fedlearn.aggregate.changes import user_changes
from fedlearn.aggregate.checks import Rejections, delta_problem, record_problem
from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.partials import PartialBuilder
from fedlearn.aggregate.round import RoundStatus
from fedlearn.aggregate.snapshots import Snapshot
from fedlearn.model import Delta, ModelFormatError
from fedlearn.serving.clones import rebase_versions, rebased_by_notes
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


def snapshot_of(blob: bytes | None, generation: int) -> Snapshot | None:
    """The user's snapshot of this generation, if it has one; raises ``ModelFormatError``
    or ``ValueError`` when it does not decode."""
    if blob is None:
        return None
    snap = Snapshot.from_bytes(blob)
    return snap if snap.generation == generation else None


def read_pair(
    blob: bytes, snap: Snapshot | None, config: AggregationConfig
) -> tuple[Delta, Delta | None] | str:
    """The user's delta and snapshot delta, or the reason (``checks.REASONS``) they cannot
    count. The size is judged before decoding, so an enormous record is never decoded."""
    problem = record_problem(blob, max_bytes=config.max_delta_bytes)
    if problem:
        return problem
    try:
        delta = Delta.from_bytes(blob)
        old = Delta.from_bytes(snap.delta) if snap is not None else None
    except (ModelFormatError, ValueError):
        return "unreadable"
    for d in (delta, old):
        problem = delta_problem(d, max_rows=config.max_delta_rows) if d is not None else None
        if problem:
            return problem
    return delta, old


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
    if record["status"] != RoundStatus.RUNNING:
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
    stale = 0
    rejections = Rejections()
    versions = rebase_versions(store.bases.meta(record["base"]))
    for users in _chunks(store.deltas.users(shard), CHUNK):
        notes = store.streams.rebase_notes(shard, users, versions)  # before the records
        records = store.deltas.get_many(shard, users)
        snapshots = rounds.snapshots(shard, list(records))
        pairs: list[tuple[Delta, Delta | None, int]] = []
        candidates: dict[str, bytes] = {}
        names: list[str] = []
        for user, rec in records.items():
            if rec.generation != generation:
                stale += 1  # an old generation's clone: it restarts, it does not contribute
                continue
            try:
                snap = snapshot_of(snapshots.get(user), generation)
            except (ModelFormatError, ValueError):
                snap, read = None, "unreadable"  # garbage never counts, not even as a base
            else:
                if snap is not None and snap.last_event >= rec.last_event:
                    continue  # nothing learned since the last contribution
                read = read_pair(rec.delta, snap, config)
            if isinstance(read, str):
                # one bad record must not stop every round: reject it with its reason, go on
                rejections.add(read, user)
                log.warning("shard %d, user %r: contribution rejected (%s)", shard, user, read)
                continue
            delta, old = read
            if delta.n_factors != k or (old is not None and old.n_factors != k):
                stale += 1
                continue
            # a rebase its trainer has not applied yet is counted as done (the snapshot has it)
            pending = [(before, share) for _, before, share in notes.get(user, ())]
            current = rebased_by_notes(pending, rec, delta) if pending else delta
            pairs.append((current, old, rec.events - (snap.events if snap else 0)))
            names.append(user)
            blob = rec.delta if current is delta else current.to_bytes()
            candidates[user] = Snapshot(generation, rec.last_event, rec.events, blob).to_bytes()
        if pairs:
            changes = user_changes(
                pairs, k, builder.table, clip_norm=config.clip_norm,
                max_weight=config.max_weight, max_norm=config.max_user_norm,
            )  # fmt: skip
            for i, reason in changes.rejected.items():
                rejections.add(reason, names[i])
                candidates.pop(names[i])  # its snapshot stays: it has not contributed
            builder.add(changes)
            rounds.write_candidates(shard, round_id, attempt, candidates)
    meta = {
        "shard": shard,
        **builder.meta(),
        "stale": stale,
        "rejected": rejections.to_json(),
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
