"""Monthly retraining: a new base trained in batch on the durable event log, a new generation.

Aggregation folds users' changes into the base between retrains; once a month the base is
trained again from everything users did (``fedlearn.data.eventlog``: each record carries the
features the event was trained on and its signal). The new base starts generation ``g + 1``:
trainers and the API treat deltas of another generation as empty, so every clone restarts
from it. The old deltas are copied to archive keys under their generation (not deleted), and
the aggregation snapshots, which refer to the old generation, are cleared. The job holds the
aggregation lock, so no round runs meanwhile.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from fedlearn.aggregate.changes import next_version
from fedlearn.aggregate.run import RoundError, finish_open_rounds, rounds_of
from fedlearn.aggregate.shadow import shadow_refusal
from fedlearn.aggregate.snapshots import Snapshot
from fedlearn.data.eventlog import read_log
from fedlearn.model import Base, TrainConfig, train_base
from fedlearn.store import Store

Sample = tuple[dict[str, float], int]
DEFAULT_LOCK_TTL_S = 3600


def samples_from_log(records: Iterable[Mapping[str, Any]]) -> tuple[list[Sample], float, float]:
    """Time-ordered ``(features, label)`` samples of event-log records, and their time range.

    Raises ``ValueError`` naming the record and field that is wrong.
    """
    timed: list[tuple[float, int, Sample]] = []
    for i, record in enumerate(records):
        features, signal, ts = record.get("features"), record.get("signal"), record.get("ts")
        if not isinstance(features, dict) or not features:
            raise ValueError(
                f"event log record {i} (log_id {record.get('log_id')!r}): 'features' must be a "
                f"non-empty object, got {features!r}"
            )
        if signal not in ("click", "skip"):
            raise ValueError(
                f"event log record {i} (log_id {record.get('log_id')!r}): 'signal' must be "
                f"'click' or 'skip', got {signal!r}"
            )
        if not isinstance(ts, int | float):
            raise ValueError(f"event log record {i}: 'ts' must be a number, got {ts!r}")
        timed.append((float(ts), i, (features, 1 if signal == "click" else 0)))
    timed.sort(key=lambda t: (t[0], t[1]))  # time order; log order breaks ties
    if not timed:
        return [], 0.0, 0.0
    return [t[2] for t in timed], timed[0][0], timed[-1][0]


def train_config_like(base: Base | None, **overrides: Any) -> TrainConfig:
    """The hyperparameters ``base`` was trained with (those TrainConfig knows), so the new
    generation has the same shape; ``overrides`` on top."""
    known = {f.name for f in fields(TrainConfig)}
    hyper = {k: v for k, v in (base.hyper if base else {}).items() if k in known}
    if base is not None:
        hyper["n_factors"] = base.n_factors
    return TrainConfig(**{**hyper, **overrides})


def retrain_from_eventlog(
    store: Store,
    eventlog: str | os.PathLike[str],
    *,
    config: TrainConfig | None = None,
    publish: bool = True,
    lock_ttl_s: int = DEFAULT_LOCK_TTL_S,
    progress: Callable[[dict[str, float]], None] | None = None,
    shadow_events: int = 0,
    shadow_margin: float = 0.0,
) -> dict[str, Any]:
    """Train a base on the event log in ``eventlog``; with ``publish``, make it the current
    base of a new generation and archive the old generation's deltas. Returns a summary.

    With ``shadow_events``, the most recent events (at most a fifth of the log) are held out
    of training and the new base is published only if it passes the shadow check on them
    (``shadow``); otherwise the summary has ``rejected`` (why, with both figures)."""
    folder = Path(eventlog)
    if not folder.is_dir():
        raise ValueError(
            f"event log folder {str(folder)!r} does not exist; pass the folder the trainers "
            f"write (`fedlearn worker --eventlog`, default DATA_DIR/eventlog)"
        )
    samples, first_ts, last_ts = samples_from_log(read_log(folder))
    if not samples:
        raise ValueError(
            f"event log folder {str(folder)!r} holds no events (no shard=*/*.jsonl lines); "
            f"nothing to train on"
        )
    held = min(shadow_events, len(samples) // 5)
    if held:
        samples = samples[:-held]  # time order: the held-out tail is what `holdout` reads
    rounds = rounds_of(store)
    job = time.strftime("m%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
    if publish and not rounds.acquire_lock(job, lock_ttl_s * 1000):
        raise RoundError(
            f"aggregation round {rounds.lock_holder()!r} is running; retrain after it ends"
        )
    try:
        if publish:
            finish_open_rounds(store, rounds, job)
        current = store.bases.current_version()
        previous = Base.from_bytes(store.bases.get_base(current)) if current else None
        generation = int(previous.meta.get("generation", 0)) + 1 if previous else 0
        config = config or train_config_like(previous)

        def on_epoch(record: dict[str, float]) -> None:
            if publish:
                rounds.renew_lock(job, lock_ttl_s * 1000)
            if progress:
                progress(record)

        versions = [info.version for info in store.bases.history()] + ([current] if current else [])
        version = next_version(versions)
        summary: dict[str, Any] = {
            "kind": "monthly",
            "generation": generation,
            "parent": current,
            "eventlog": str(folder.resolve()),
            "n_events": len(samples),
            "first_ts": first_ts,
            "last_ts": last_ts,
            "trained_at": time.time(),
        }
        result = train_base(samples, config, version=version, meta=summary, progress=on_epoch)
        summary.update(version=version, epochs=result.epochs)
        if result.history and "valid_auc" in result.history[-1]:
            summary["valid_auc"] = max(h.get("valid_auc", 0.0) for h in result.history)
        if not publish:
            summary["base"] = result.base
            return summary
        refused = shadow_refusal(
            result.base, previous, folder, n_events=held, margin=shadow_margin, summary=summary
        )
        if refused:
            return {**summary, "rejected": refused}
        store.bases.put_base(version, result.base.to_bytes(), summary)
        store.bases.set_current(version, expected=current)
        summary["archived"] = archive_generation(store, generation)
        return summary
    finally:
        if publish:
            rounds.release_lock(job)


def archive_generation(store: Store, generation: int) -> int:
    """Copy every delta of a generation before ``generation`` to the archive of its own
    generation, and clear the aggregation snapshots; returns how many deltas were archived.

    Deltas stay where they are (trainers overwrite them as users come back, from the new
    base): the archive keeps the last state of each clone of the old generation.
    """
    rounds = rounds_of(store)
    archived = 0
    for shard in range(store.n_shards):
        by_generation: dict[int, dict[str, bytes]] = {}
        for record in store.deltas.iter_shard(shard):
            if record.generation >= generation:
                continue
            snap = Snapshot(record.generation, record.last_event, record.events, record.delta)
            by_generation.setdefault(record.generation, {})[record.user] = snap.to_bytes()
            if len(by_generation[record.generation]) >= 500:
                archived += rounds.archive(
                    shard, record.generation, by_generation.pop(record.generation)
                )
        for old, chunk in by_generation.items():
            archived += rounds.archive(shard, old, chunk)
        rounds.clear_snapshots(shard)
    return archived
