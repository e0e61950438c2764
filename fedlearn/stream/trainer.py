"""The stream trainer: owns shards, applies their events to users' clones, exactly once.

Per owned shard, in a loop: after gaining the shard, first re-do its pending entries (those a
dead owner read but never committed), then read new ones; apply them (``apply.apply_batch``),
then commit deltas + acknowledgement + applied log in one atomic script that also checks the
lease (fencing). Users' deltas stay in memory while the shard is owned (Redis is written
through and stays the truth a new owner reloads from). SIGTERM sets ``stop``: the current
batch is finished and committed, the event log drained, the leases released.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedlearn.model import Base, Delta
from fedlearn.store import Batch, LeaseLostError, StaleCommitError, Store, new_owner_token
from fedlearn.stream import metrics
from fedlearn.stream.apply import (
    DEFAULT_GATING,
    NEVER,
    AppliedBatch,
    CloneSettings,
    UserState,
    apply_batch,
)
from fedlearn.stream.bases import BaseCache, NoBaseError
from fedlearn.stream.eventlog import EventLogWriter
from fedlearn.stream.gating import Gate, GateSettings
from fedlearn.stream.telemetry import Publisher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    """How a trainer works; every field has a ``FEDLEARN_TRAINER_*`` setting."""

    name: str = "trainer"
    batch_size: int = 1000
    lease_ttl_ms: int = 10_000
    idle_sleep_s: float = 0.005
    idle_sleep_max_s: float = 0.04
    base_refresh_s: float = 1.0
    max_cached_users: int = 200_000
    eventlog_every_s: float = 1.0
    trim_every_s: float = 5.0
    gating: GateSettings = DEFAULT_GATING


@dataclass
class _Shard:
    """What the trainer keeps of an owned shard."""

    users: OrderedDict[str, UserState] = field(default_factory=OrderedDict)
    recovering: bool = True  # pending entries of a previous owner come first


class Trainer:
    """Trains users' clones from the shard streams it owns.

    ``clone`` gives the clones' learning settings for a base (they scale with the base's own
    training rate, so they are worked out per base version).
    """

    def __init__(
        self,
        store: Store,
        clone: Callable[[Base], CloneSettings],
        config: TrainerConfig | None = None,
        *,
        eventlog: EventLogWriter | None = None,
    ) -> None:
        from fedlearn.stream.ownership import Ownership

        self.store = store
        self.clone = clone
        self.config = config or TrainerConfig()
        self.owner = new_owner_token(self.config.name)
        self.eventlog = eventlog
        self.bases = BaseCache(store, refresh_s=self.config.base_refresh_s)
        self.shards: dict[int, _Shard] = {}
        self.ownership = Ownership(
            store,
            self.owner,
            lease_ttl_ms=self.config.lease_ttl_ms,
            on_gain=self._gain,
            on_loss=self._loss,
        )
        self.applied_total = 0
        self.telemetry = Publisher(self)

    # -- ownership callbacks ----------------------------------------------------------------

    def _gain(self, shard: int) -> None:
        self.store.streams.ensure_group(shard)
        self.shards[shard] = _Shard()
        if self.eventlog:
            self.eventlog.forget(shard)

    def _loss(self, shard: int) -> None:
        self.shards.pop(shard, None)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set, then finish cleanly.

        The event log is drained by a thread of its own: its fsyncs would otherwise stall
        training every second (the freshness tail). An idle trainer backs off from polling
        every ``idle_sleep_s`` to at most ``idle_sleep_max_s`` (one non-blocking read per shard,
        since a blocking read over several shards' streams is not possible on a cluster).
        """
        heartbeat_every = self.config.lease_ttl_ms / 3000
        last_beat = last_trim = -float("inf")
        idle = self.config.idle_sleep_s
        drainer = self._start_drainer(stop)
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now - last_beat >= heartbeat_every:
                    self.ownership.maintain()
                    metrics.OWNED_SHARDS.set(len(self.ownership.owned))
                    last_beat = now
                self.telemetry.maybe_publish(now)
                try:
                    applied = self.step()
                except NoBaseError as exc:
                    log.warning("%s", exc)
                    stop.wait(1.0)
                    continue
                if now - last_trim >= self.config.trim_every_s:
                    for shard in list(self.shards):
                        self.store.streams.trim_acked(shard)
                    last_trim = now
                if applied:
                    idle = self.config.idle_sleep_s
                else:
                    stop.wait(idle)
                    idle = min(2 * idle, self.config.idle_sleep_max_s)
        finally:
            if drainer is not None:
                drainer.join()
            self.shutdown()

    def _start_drainer(self, stop: threading.Event) -> threading.Thread | None:
        if self.eventlog is None:
            return None

        def drain_until_stopped() -> None:
            while not stop.wait(self.config.eventlog_every_s):
                try:
                    self.drain_eventlog()
                except Exception:  # a failed drain is retried next time; nothing is trimmed
                    log.exception("draining the event log failed; retrying")

        thread = threading.Thread(target=drain_until_stopped, name="eventlog", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        """Drain the event log of owned shards and release their leases."""
        if self.eventlog:
            self.drain_eventlog()
        self.ownership.release_all()
        self.telemetry.withdraw()

    def drain_eventlog(self) -> int:
        assert self.eventlog is not None
        moved = 0
        for shard in list(self.shards):
            while (n := self.eventlog.drain(shard)) > 0:
                moved += n
        return moved

    def step(self) -> int:
        """One pass over the owned shards: at most one batch each. Returns events applied."""
        base = self.bases.current()
        return sum(self.work_shard(shard, base) for shard in list(self.shards))

    def work_shard(self, shard: int, base: Base) -> int:
        state = self.shards[shard]
        size = self.config.batch_size
        if state.recovering:
            batch = self.store.streams.claim(shard, self.owner, min_idle_ms=0, count=size)
            if not len(batch):
                state.recovering = False
                batch = self.store.streams.read_batch(shard, self.owner, count=size, block_ms=0)
        else:
            batch = self.store.streams.read_batch(shard, self.owner, count=size, block_ms=0)
        if not len(batch):
            return 0
        return self.process(shard, batch, base)

    def process(self, shard: int, batch: Batch, base: Base) -> int:
        """Apply and commit one batch of ``shard``; returns the events applied."""
        started = time.perf_counter()
        state = self.shards[shard]
        generation = self.bases.generation(base)
        self._load_users(shard, state, {e.event["user"] for e in batch.entries}, base, generation)
        predictions = self._prediction_features(shard, batch)
        items = {e.event["item"] for e in batch.entries if "item" in e.event}
        catalog = self.store.catalog.features(list(items)) if items else {}
        result = apply_batch(
            base,
            state.users,
            batch.entries,
            self.clone(base),
            item_features=catalog.get,
            prediction_features=lambda pid, item: predictions.get((pid, item)),
            applied_at=time.time(),
            gating=self.config.gating,
        )
        try:
            self.store.streams.commit_batch(
                shard,
                owner=self.owner,
                deltas={u: s.delta.to_bytes() for u, s in result.users.items()},
                last_ids={u: str(s.last_event) for u, s in result.users.items()},
                entry_ids=batch.ids,
                # One applied-log entry per batch (in columns): one XADD, not one per event.
                log_entries=[result.log] if result.applied else [],
                base=base.version,
                generation=generation,
                gates={u: s.gate.to_bytes() for u, s in result.users.items()},
            )
        except LeaseLostError:
            log.warning(
                "shard %d: lease lost before commit; its batch is left to the new owner", shard
            )
            self.ownership.lost(shard)
            return 0
        except StaleCommitError as exc:
            log.warning("shard %d: %s; reloading its users from Redis", shard, exc)
            state.users.clear()
            state.recovering = True
            return 0
        for user, user_state in result.users.items():
            state.users[user] = user_state
            state.users.move_to_end(user)
        self._evict(state)
        self._observe(shard, batch, result, time.perf_counter() - started)
        self.applied_total += result.applied
        return result.applied

    # -- helpers ----------------------------------------------------------------------------

    def _load_users(
        self, shard: int, state: _Shard, users: set[str], base: Base, generation: int
    ) -> None:
        missing = [u for u in users if u not in state.users]
        if not missing:
            return
        records = self.store.deltas.get_many(shard, missing)
        for user in missing:
            record = records.get(user)
            gate = Gate.from_bytes(record.gate if record else None)
            if record is None:
                state.users[user] = UserState(Delta(base.n_factors), NEVER)
            elif record.generation != generation:
                # A monthly retrain started a new generation: the clone restarts from the new
                # base (the old delta was archived by the job), but its place in the stream
                # is kept so that nothing is applied twice.
                state.users[user] = UserState(Delta(base.n_factors), record.last_event, gate)
            else:
                delta = Delta.from_bytes(record.delta)
                state.users[user] = UserState(delta, record.last_event, gate)

    def _prediction_features(
        self, shard: int, batch: Batch
    ) -> dict[tuple[str, str], dict[str, float]]:
        ids = [  # (id, user): a record is found only for its own user's events
            (e.event["prediction_id"], e.event["user"])
            for e in batch.entries
            if e.event.get("prediction_id")
        ]
        if not ids:
            return {}
        found = {}
        for pid, record in self.store.predictions.get_predictions(shard, ids).items():
            for item, scored in (record.get("items") or {}).items():
                found[(pid, item)] = scored["features"]
        return found

    def _evict(self, state: _Shard) -> None:
        while len(state.users) > self.config.max_cached_users:
            state.users.popitem(last=False)

    def _observe(self, shard: int, batch: Batch, result: AppliedBatch, seconds: float) -> None:
        label = str(shard)
        metrics.BATCH_SECONDS.observe(seconds)
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.EVENTS_APPLIED.labels(shard=label).inc(result.applied)
        metrics.EVENTS_SKIPPED.labels(shard=label).inc(result.skipped)
        accepted_ms = np.fromiter((int(e.id.split("-", 1)[0]) for e in batch.entries), float)
        metrics.observe_freshness(accepted_ms, time.time() * 1000)
        if result.applied:
            metrics.observe_progressive(
                result.labels, result.predictions, result.base_predictions, result.positions
            )

    @property
    def owned(self) -> set[int]:
        return set(self.ownership.owned)
