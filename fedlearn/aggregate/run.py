"""The steps of a round against the store, each safe to run twice: begin, (map per shard, in
``mapper``), reduce, promote; and ``run_round_inline``, all of them in this process.

States of a round (``round.RoundStatus``, whose ``TRANSITIONS`` allow each move):
``queued`` -> ``running`` (holds the lock) -> ``publishing`` -> ``published`` -> ``done``
(snapshots promoted, lock released); or ``rejected`` (another round held the lock),
``skipped`` (too few users: nothing published, changes wait), ``failed`` (also: the candidate
base failed its checks, ``checks.check_candidate``; the current base stays), ``rejected``
(also: the candidate scored worse than the current base in shadow, ``shadow``), ``abandoned``
(its worker died: ``heal`` found its heartbeat stale, or the next round found it unfinished).
Snapshots advance only after the base version is published, so a round that dies at any
point before leaves the base and the snapshots as they were, and the next round includes
everything.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from fedlearn.aggregate.changes import apply_update, next_version, norm_summary
from fedlearn.aggregate.checks import CandidateRefused, Rejections, check_candidate
from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.fold import fold_rows
from fedlearn.aggregate.heartbeat import beating
from fedlearn.aggregate.mapper import map_shard
from fedlearn.aggregate.partials import (
    merge_bucket,
    norms_of,
    update_from_bytes,
    update_to_bytes,
)
from fedlearn.aggregate.promote import REBASE_LOOKBACK, rebase_participants
from fedlearn.aggregate.round import RoundStatus, move
from fedlearn.aggregate.shadow import shadow_refusal
from fedlearn.aggregate.strategies import INTERCEPT
from fedlearn.model import Base
from fedlearn.store import Store, VersionConflictError, VersionExistsError
from fedlearn.store.rounds import Rounds


class RoundError(RuntimeError):
    """A round could not finish; its record says why (``error``) and nothing was published."""


def rounds_of(store: Store) -> Rounds:
    """The store's round state."""
    return store.rounds


def new_round_id() -> str:
    return time.strftime("r%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def create_round(
    rounds: Rounds,
    config: AggregationConfig,
    *,
    round_id: str | None = None,
    trigger: str = "",
    attempt: int = 1,
    retry_of: str | None = None,
) -> str:
    """Record a ``queued`` round with the config it will run with; returns its id.
    ``attempt`` > 1 and ``retry_of`` mark the retry of an abandoned round (``heal``)."""
    round_id = round_id or new_round_id()
    extra = {"attempt": attempt, "retry_of": retry_of} if retry_of else {}
    if not rounds.create(round_id, config=config.to_json(), trigger=trigger, **extra):
        raise ValueError(f"round id {round_id!r} is already taken; pick another")
    return round_id


def _ttl_ms(record: dict[str, Any]) -> int:
    return int(record["config"]["lock_ttl_s"]) * 1000


def begin_round(store: Store, rounds: Rounds, round_id: str) -> bool:
    """Take the lock, finish what earlier rounds left, and mark the round ``running`` on the
    current base. True when the map step should be launched (also for a re-sent start of a
    round already running), False when the round is rejected or over."""
    record = rounds.get(round_id)
    if record is None:
        raise LookupError(f"round {round_id!r} does not exist; create it first")
    if record["status"] != RoundStatus.QUEUED:
        return record["status"] == RoundStatus.RUNNING
    if not rounds.acquire_lock(round_id, _ttl_ms(record)):
        holder = rounds.lock_holder()
        move(
            rounds,
            round_id,
            RoundStatus.REJECTED,
            allowed=[RoundStatus.QUEUED],
            finished_at=time.time(),
            error=f"round {holder!r} is running; one round runs at a time, retry after it",
        )
        return False
    try:
        finish_open_rounds(store, rounds, round_id)
        version = store.bases.current_version()
        if version is None:
            raise RoundError("no base model is published yet: publish one before aggregating")
        base = Base.from_bytes(store.bases.get_base(version))
    except Exception as exc:
        fail_round(store, rounds, round_id, str(exc))
        raise
    moved, _ = move(
        rounds, round_id, RoundStatus.RUNNING, allowed=[RoundStatus.QUEUED], base=version,
        n_factors=base.n_factors, generation=int(base.meta.get("generation", 0)),
        shards=store.n_shards, started_at=time.time(), heartbeat_at=rounds.clock(),
    )  # fmt: skip
    return moved


def finish_open_rounds(store: Store, rounds: Rounds, current: str) -> None:
    """With the lock held: promote rounds published but not promoted, clean up dead ones."""
    for other in rounds.open_rounds():
        if other == current:
            continue
        record = rounds.get(other)
        status = record["status"] if record else None
        if status == RoundStatus.PUBLISHING and store.bases.current_version() == record.get(
            "new_version"
        ):
            move(rounds, other, RoundStatus.PUBLISHED, allowed=[RoundStatus.PUBLISHING])
            status = RoundStatus.PUBLISHED
        if status == RoundStatus.PUBLISHED:
            promote_round(store, rounds, other, release=False)
        elif status in (RoundStatus.RUNNING, RoundStatus.PUBLISHING):
            abandon_round(store, rounds, other, f"found unfinished ({status}) by round {current}")


def _close(
    store: Store,
    rounds: Rounds,
    round_id: str,
    to: RoundStatus,
    *,
    allowed: Iterable[RoundStatus] = (),
    **fields: Any,
) -> bool:
    """End the round with status ``to`` (stamped ``finished_at``) and, if this call moved it,
    forget its partials and candidates: they count in no round now (whoever moved it first
    forgot them). The lock is the caller's to release."""
    moved, _ = move(rounds, round_id, to, allowed=allowed, finished_at=time.time(), **fields)
    if moved:
        for shard in range(store.n_shards):
            rounds.discard(shard, round_id)
    return moved


def abandon_round(store: Store, rounds: Rounds, round_id: str, reason: str) -> bool:
    """Give up on a round that will not finish: forget its partials and candidates. True if
    this call abandoned it (False: it had moved on, or was abandoned already)."""
    return _close(store, rounds, round_id, RoundStatus.ABANDONED, error=reason)


def fail_round(store: Store, rounds: Rounds, round_id: str, error: str) -> None:
    """Record a failure; a round that may have published is left to the next round."""
    allowed = [RoundStatus.QUEUED, RoundStatus.RUNNING]
    _close(store, rounds, round_id, RoundStatus.FAILED, allowed=allowed, error=error)
    rounds.release_lock(round_id)


def _end_unpublished(
    store: Store,
    rounds: Rounds,
    round_id: str,
    summary: dict[str, Any],
    status: RoundStatus,
    reason: str,
) -> dict[str, Any]:
    """End a running round without publishing (``skipped``; ``failed`` when its candidate
    was refused by its checks, ``rejected`` by its shadow check): forget its partials, free
    the lock; the current base stays."""
    summary = {**summary, "status": status, "reason": reason}
    error = {"error": reason} if status in (RoundStatus.FAILED, RoundStatus.REJECTED) else {}
    running = [RoundStatus.RUNNING]
    _close(store, rounds, round_id, status, allowed=running, result=summary, **error)
    rounds.release_lock(round_id)
    return summary


def reduce_round(
    store: Store, rounds: Rounds, round_id: str, *, worker: str = ""
) -> dict[str, Any]:
    """Aggregate the shards' partials and publish the next base version (``publishing`` ->
    ``published``). Returns the round's summary; raises :class:`RoundError` when it failed."""
    started = time.perf_counter()
    record = rounds.get(round_id)
    if record is None:
        raise LookupError(f"round {round_id!r} does not exist")
    status = record["status"]
    if status in (RoundStatus.PUBLISHED, RoundStatus.DONE, RoundStatus.SKIPPED):
        return record.get("result", {})
    if status == RoundStatus.PUBLISHING:
        return _finish_publishing(store, rounds, record)
    if status != RoundStatus.RUNNING:
        raise RoundError(f"round {round_id} is {status}: {record.get('error', '')}")
    config = AggregationConfig.from_json(record["config"])
    if not rounds.renew_lock(round_id, _ttl_ms(record)):
        reason = (
            f"round {round_id} lost its lock (held by {rounds.lock_holder()!r}): it ran longer "
            f"than lock_ttl_s={config.lock_ttl_s}; raise it for rounds this large"
        )
        abandon_round(store, rounds, round_id, reason)
        raise RoundError(reason)
    shards = range(store.n_shards)
    metas = [rounds.partial_meta(s, round_id) for s in shards]
    missing = [s for s, m in zip(shards, metas, strict=True) if m is None]
    if missing:
        error = f"shards {missing} have no partial result (their map task did not finish)"
        fail_round(store, rounds, round_id, error)
        raise RoundError(f"round {round_id}: {error}; the next round includes their users")
    version, k = record["base"], int(record["n_factors"])
    users = sum(m["users"] for m in metas)  # type: ignore[index]
    summary: dict[str, Any] = {
        "round": round_id,
        "parent": version,
        "generation": record["generation"],
        "users": users,
        "events": sum(m["events"] for m in metas),  # type: ignore[index]
        "strategy": config.make_strategy().describe(),
        "clip_norm": config.clip_norm,
        "max_weight": config.max_weight,
        "noise_multiplier": config.noise_multiplier,
        "noise_std": (
            config.noise_multiplier * config.clip_norm * config.max_weight
            if config.noise_multiplier and config.clip_norm
            else 0.0
        ),
        "min_users": config.min_users,
        "min_row_users": config.min_row_users,
        "reducer": worker,
        "shards": {str(m["shard"]): _shard_note(m) for m in metas},  # type: ignore[index]
        "rejected": _rejections(metas),  # type: ignore[arg-type]
    }
    if users < config.min_users:
        return _end_unpublished(
            store, rounds, round_id, summary, RoundStatus.SKIPPED,
            f"{users} user(s) contributed, fewer than min_users={config.min_users}; their "
            f"changes wait for the next round",
        )  # fmt: skip
    base = Base.from_bytes(store.bases.get_base(version))
    strategy = config.make_strategy()
    state = None
    if strategy.stateful:
        blob = rounds.get_momentum(version)
        state = update_from_bytes(blob, k) if blob is not None else None
    buckets = (
        merge_bucket(
            [rounds.partial_field(s, round_id, f"b{b}") or b"" for s in shards], k,
            needs_values=strategy.needs_values, max_weight=float(config.max_weight),
            clip_norm=config.clip_norm,
        )
        for b in range(config.buckets)
    )  # fmt: skip
    # DP noise must not be predictable: fresh OS entropy
    folded = fold_rows(
        buckets, k, strategy, min_row_users=config.min_row_users, state=state,
        rng=np.random.default_rng(),
    )  # fmt: skip
    applied, new_state = folded.step, folded.state
    norms = np.concatenate(
        [norms_of(rounds.partial_field(s, round_id, "norms") or b"") for s in shards]
    )
    new_version = next_version([info.version for info in store.bases.history()] + [version])
    summary.update(
        version=new_version,
        rows_updated=len(applied.names),
        rows_withheld=folded.rows_withheld,
        new_rows=sum(1 for n in applied.names if n != INTERCEPT and n not in base.index),
        **norm_summary(norms, config.clip_norm),
    )
    meta = {
        **base.meta, "generation": record["generation"], "parent": version, "round": summary,
        # the promotions whose rebase the API may have to apply on the fly (serving.clones)
        "rebase_versions": [new_version, *base.meta.get("rebase_versions", [])][:REBASE_LOOKBACK],
    }  # fmt: skip
    # The history's meta is the summary, and the next round's map reads the lineage there
    # (not in the base's bytes, which it never decodes).
    summary["rebase_versions"] = meta["rebase_versions"]
    new_base = apply_update(base, applied, version=new_version, meta=meta)
    try:
        summary["candidate"] = check_candidate(
            new_base, max_row_norm=config.max_row_norm, max_features=config.max_base_features
        )
    except CandidateRefused as exc:
        return _end_unpublished(
            store,
            rounds,
            round_id,
            summary,
            RoundStatus.FAILED,
            f"{exc}; base {version} stays current",
        )
    refused = shadow_refusal(
        new_base, base, config.monthly_eventlog_dir, n_events=config.shadow_events,
        margin=config.shadow_margin, summary=summary,
    )  # fmt: skip
    if refused:
        return _end_unpublished(store, rounds, round_id, summary, RoundStatus.REJECTED, refused)
    if new_state is not None:
        rounds.put_momentum(new_version, update_to_bytes(new_state))
    rounds.put_shares(new_version, folded.shares.to_bytes())  # for the promotion's rebase
    running = [RoundStatus.RUNNING]
    moved, was = move(
        rounds, round_id, RoundStatus.PUBLISHING, allowed=running, new_version=new_version
    )
    if not moved:
        raise RoundError(f"round {round_id} became {was} while reducing; nothing published")
    summary["reduce_seconds"] = round(time.perf_counter() - started, 4)
    try:
        store.bases.put_base(new_version, new_base.to_bytes(), summary)
    except VersionExistsError as exc:
        return _publish_failed(store, rounds, round_id, str(exc))
    return _finish_publishing(store, rounds, {**record, "new_version": new_version}, summary)


def _rejections(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The shards' rejected contributions, counted per reason (and a few users named)."""
    total = Rejections()
    for meta in metas:
        total.merge(meta.get("rejected", {}))
    return total.to_json()


def _shard_note(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in ("users", "events", "rows", "worker", "seconds")}


def _publish_failed(store: Store, rounds: Rounds, round_id: str, error: str) -> dict[str, Any]:
    publishing = [RoundStatus.PUBLISHING]
    _close(store, rounds, round_id, RoundStatus.FAILED, allowed=publishing, error=error)
    rounds.release_lock(round_id)
    raise RoundError(f"round {round_id}: {error}; nothing was published")


def _finish_publishing(
    store: Store, rounds: Rounds, record: dict[str, Any], summary: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Point ``current`` at the round's version (if still on its parent) and mark it
    published. Safe to repeat after a crash at any point of it."""
    round_id, new_version, parent = record["id"], record["new_version"], record["base"]
    if summary is None:  # resumed after a crash: the summary was stored with the version
        summary = store.bases.meta(new_version)
    try:
        store.bases.set_current(new_version, expected=parent)
    except VersionConflictError as exc:
        if exc.actual != new_version:
            return _publish_failed(store, rounds, round_id, str(exc))
    # from publishing, the one status before published (TRANSITIONS)
    move(rounds, round_id, RoundStatus.PUBLISHED, result=summary, published_at=time.time())
    return summary


def promote_round(
    store: Store, rounds: Rounds, round_id: str, *, release: bool = True
) -> dict[str, Any]:
    """Rebase the participants of a published round (``promote``), make its rebased
    candidates the users' snapshots, mark it ``done`` and release the lock. Anything else is
    left as it is (returns the record)."""
    record = rounds.get(round_id)
    if record is None:
        raise LookupError(f"round {round_id!r} does not exist")
    if record["status"] == RoundStatus.PUBLISHED:
        rebased = rebase_participants(store, rounds, record)
        promoted = 0
        for shard in range(store.n_shards):
            promoted += rounds.promote(shard, round_id, rebased=rebased)
            rounds.drop_partial(shard, round_id)
        # from published, the one status before done (TRANSITIONS)
        move(rounds, round_id, RoundStatus.DONE, promoted=promoted, finished_at=time.time())
    if release:
        rounds.release_lock(round_id)
    return rounds.get(round_id) or record


def run_round_inline(
    store: Store, config: AggregationConfig, *, round_id: str | None = None, trigger: str = "inline"
) -> dict[str, Any]:
    """A whole round in this process, shard after shard (no Celery): for tests, one-machine
    setups and ``fedlearn aggregate --inline``. Returns the round's final record."""
    rounds = rounds_of(store)
    round_id = create_round(rounds, config, round_id=round_id, trigger=trigger)
    with beating(rounds, round_id):
        if begin_round(store, rounds, round_id):
            for shard in range(store.n_shards):
                map_shard(store, rounds, round_id, shard, worker="inline")
            reduce_round(store, rounds, round_id, worker="inline")
            promote_round(store, rounds, round_id)
    return rounds.get(round_id) or {}
