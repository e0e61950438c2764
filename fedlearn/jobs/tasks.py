"""Celery tasks: thin, taking ids. The work is done by ``fedlearn.aggregate`` (and, for the
dashboard's served-vs-greedy estimate, ``fedlearn.evaluate.decisions``).

A round is ``start`` -> chord(``map_shard`` per shard) -> ``reduce`` -> ``promote``; any
failure calls ``on_round_error``, which records it and releases the lock. Every task may run
twice (redelivery after a worker died, a duplicate message) without counting anything twice.
Each renews its round's heartbeat while it works; ``heal`` (beat, and at worker start)
abandons and retries a round whose heartbeat stopped.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from celery import Task, chord
from celery.signals import worker_ready

from fedlearn.aggregate import run
from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.heal import heal_rounds
from fedlearn.aggregate.heartbeat import beating
from fedlearn.aggregate.mapper import map_shard as map_shard_step
from fedlearn.aggregate.monthly import retrain_from_eventlog
from fedlearn.aggregate.retention import prune_bases
from fedlearn.aggregate.round import RoundStatus
from fedlearn.config import Settings
from fedlearn.evaluate.decisions import dashboard_estimate
from fedlearn.jobs.app import (
    HEAL,
    MAP_SHARD,
    MONTHLY,
    ON_ERROR,
    OPE_DASHBOARD,
    PROMOTE,
    REDUCE,
    START_ROUND,
    app,
)
from fedlearn.store import Store
from fedlearn.store.rounds import Rounds

_RETRY = {
    "autoretry_for": (redis.ConnectionError, redis.TimeoutError),
    "retry_backoff": True,
    "max_retries": 5,
}


class StoreTask(Task):
    """A task with this process's ``Store``, opened on first use (after the pool forked)."""

    _store: Store | None = None
    _rounds: Rounds | None = None

    @property
    def settings(self) -> Settings:
        return self.app.conf.fedlearn_settings

    @property
    def store(self) -> Store:
        if StoreTask._store is None:
            settings = self.settings
            StoreTask._store = Store.from_url(
                settings.redis_url, settings.n_shards, stream_maxlen=settings.stream_maxlen,
                dedupe_window_s=settings.dedupe_window_s,
            )  # fmt: skip
            StoreTask._store.claim_shard_count()  # rounds map the deployment's shards
        return StoreTask._store

    @property
    def rounds(self) -> Rounds:
        if StoreTask._rounds is None:
            StoreTask._rounds = run.rounds_of(self.store)
        return StoreTask._rounds


@app.task(base=StoreTask, bind=True, name=START_ROUND, **_RETRY)
def start_round(
    self: StoreTask, round_id: str | None = None, overrides: dict[str, Any] | None = None
) -> str:
    """Begin ``round_id`` (the beat schedule passes none: a new round with the settings'
    config and ``overrides``) and launch its map/reduce workflow."""
    if round_id is None:
        config = AggregationConfig.from_settings(self.settings, **(overrides or {}))
        round_id = run.create_round(self.rounds, config, trigger="beat")
    with beating(self.rounds, round_id):
        if run.begin_round(self.store, self.rounds, round_id):
            maps = [map_shard.si(round_id, shard) for shard in range(self.store.n_shards)]
            workflow = chord(maps, reduce_round.si(round_id)) | promote_round.si(round_id)
            workflow.on_error(on_round_error.s(round_id))
            workflow.apply_async()
    return round_id


@app.task(base=StoreTask, bind=True, name=MAP_SHARD, **_RETRY)
def map_shard(self: StoreTask, round_id: str, shard: int) -> dict[str, Any]:
    with beating(self.rounds, round_id):
        return map_shard_step(
            self.store, self.rounds, round_id, shard, worker=self.request.hostname or ""
        )


@app.task(base=StoreTask, bind=True, name=REDUCE, **_RETRY)
def reduce_round(self: StoreTask, round_id: str) -> dict[str, Any]:
    with beating(self.rounds, round_id):
        return run.reduce_round(
            self.store, self.rounds, round_id, worker=self.request.hostname or ""
        )


@app.task(base=StoreTask, bind=True, name=PROMOTE, **_RETRY)
def promote_round(self: StoreTask, round_id: str) -> str:
    with beating(self.rounds, round_id):
        status = run.promote_round(self.store, self.rounds, round_id)["status"]
    if status == RoundStatus.DONE:  # a new version: the oldest may go (safe to repeat)
        prune_bases(self.store, self.rounds, self.settings.base_keep_versions)
    return status


@app.task(base=StoreTask, name=ON_ERROR)
def on_round_error(failed_task_id: str, round_id: str) -> None:
    """Errback of a round's workflow (Celery calls it with the failed task's id): record
    why the round failed and free the lock."""
    result = app.AsyncResult(failed_task_id).result
    why = (
        f"{type(result).__name__}: {result}"
        if isinstance(result, BaseException)
        else (f"task {failed_task_id} failed; see the worker logs")
    )
    run.fail_round(on_round_error.store, on_round_error.rounds, round_id, why)


@app.task(base=StoreTask, bind=True, name=HEAL, **_RETRY)
def heal(self: StoreTask, follow: bool = False) -> dict[str, list[str]]:
    """Abandon rounds whose heartbeat stopped, finish those only their promotion was left of,
    and start the retries. With ``follow``, look again when a round alive now would be stale
    (until no round is open): a worker's own watch, for when beat does not run."""
    config = AggregationConfig.from_settings(self.settings)
    healed = heal_rounds(
        self.store, self.rounds, stale_s=config.stale_s, by=self.request.hostname or "heal"
    )
    for retry in healed.retries:
        start_round.delay(retry)
    if follow and healed.recheck_s is not None:
        heal.apply_async(kwargs={"follow": True}, countdown=healed.recheck_s + 0.5)
    return {"abandoned": healed.abandoned, "retries": healed.retries,
            "finished": healed.finished}  # fmt: skip


@worker_ready.connect
def _heal_at_start(sender: Any, **_: Any) -> None:
    """A worker that starts (maybe restarted after its predecessor was killed mid-round)
    looks for dead rounds now and follows the open ones until they end or go stale: it may
    be the only worker, and beat may not run."""
    heal.apply_async(kwargs={"follow": True})


@app.task(base=StoreTask, bind=True, name=MONTHLY)
def monthly_retrain(self: StoreTask, eventlog: str | None = None) -> dict[str, Any]:
    """Retrain the base from the event log and start a new generation."""
    config = AggregationConfig.from_settings(self.settings)
    folder = eventlog or _eventlog_dir(self.settings)
    summary = retrain_from_eventlog(
        self.store, folder, shadow_events=config.shadow_events, shadow_margin=config.shadow_margin
    )
    summary.pop("base", None)
    if "rejected" not in summary:
        prune_bases(self.store, self.rounds, self.settings.base_keep_versions)
    return summary


def _eventlog_dir(settings: Settings) -> str:
    """The event log the trainers write (``FEDLEARN_MONTHLY_EVENTLOG_DIR``, else
    ``DATA_DIR/eventlog``)."""
    config = AggregationConfig.from_settings(settings)
    return config.monthly_eventlog_dir or str(settings.data_dir / "eventlog")


@app.task(base=StoreTask, bind=True, name=OPE_DASHBOARD, **_RETRY)
def estimate_served_and_greedy(self: StoreTask) -> dict[str, Any]:
    """Estimate the served policy's and greedy's top-slot click rate on the newest
    ``ope_dashboard_last`` decisions of the event log and store it for the dashboard and
    ``/metrics``. Takes no path: it reads the service's own log. Running it twice only
    replaces the stored estimate with an equal one."""
    result = dashboard_estimate(
        _eventlog_dir(self.settings), last=self.settings.ope_dashboard_last, now=time.time()
    )
    self.store.ope.put(result)
    return result
