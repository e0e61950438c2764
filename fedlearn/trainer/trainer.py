"""The stream trainer: owns shards, applies their events to users' clones, exactly once.

Per owned shard, in a loop: after gaining the shard, first re-do its pending entries (those a
dead owner read but never committed), then read new ones; apply them (``apply.apply_batch``),
then commit deltas + acknowledgement + applied log in one atomic script that also checks the
lease (fencing). Users' deltas stay in memory while the shard is owned (Redis is written
through and stays the truth a new owner reloads from); they are decoded into one table of rows
for all the trainer's shards (``model.table``), which a batch updates in place, so a failed
commit drops the shard's users to be reloaded. A trainer that keeps up works the few events
each of many shards holds as one pass (``process_many``, ``passes``). SIGTERM sets ``stop``:
the current batch is finished and committed, the event log drained, the leases released.

Failures are loud and short: any unexpected error sets ``stop`` (so the event log thread ends
too) and propagates, and ``fedlearn worker`` exits non-zero for its supervisor to restart it.
Shutdown is bounded: when Redis does not answer, the leases are left to lapse. A poison entry
(a payload that is no event) or a user whose stored delta or gate cannot be read is not an
error of the trainer: it goes to the shard's dead-letter stream in the batch's own commit, with
its reason, and the user's other events go on (an unreadable delta restarts from the base).
"""

from __future__ import annotations

import bisect
import gc
import logging
import math
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import redis

from fedlearn.config import setting_default
from fedlearn.data.eventlog import CANDIDATES, render_applied
from fedlearn.model import Base
from fedlearn.model.delta import decode_rows
from fedlearn.model.errors import ModelFormatError
from fedlearn.model.gating import Gate, GateSettings
from fedlearn.model.kernel import warm_up
from fedlearn.model.table import DeltaTable
from fedlearn.serving.base_cache import BaseCache, NoBaseError
from fedlearn.store import Batch, LeaseLostError, StaleCommitError, Store, new_owner_token
from fedlearn.store.deadletters import DeadLetter
from fedlearn.store.deltas import DeltaRecord
from fedlearn.store.entries import screen_events
from fedlearn.telemetry import trainer as metrics
from fedlearn.trainer import passes
from fedlearn.trainer.apply import (
    DEFAULT_GATING,
    NEVER,
    AppliedBatch,
    CloneSettings,
    UserState,
    apply_batch,
)
from fedlearn.trainer.catalog_cache import CatalogCache
from fedlearn.trainer.drift import DriftMonitor
from fedlearn.trainer.eventlog import EventLogWriter
from fedlearn.trainer.publisher import Publisher, TrainerState

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a stored record that cannot be decoded raises. struct.error: the gate's format raised it
# before it had a ModelFormatError of its own.
UNREADABLE = (ModelFormatError, struct.error)
DRAINER_JOIN_S = 5.0  # an fsync or a Redis call in flight; never wait forever for it
OUTAGE_POLL_S = 0.2
# The collector's thresholds in a trainer process. A batch allocates a few dicts per event and
# the trainer keeps every cached user's state alive, so with CPython's default (a collection
# every 700 allocations, a full one walking all cached users every so often) the collector
# took about a quarter of a benchmarks/bench_trainer.py run's CPU, and a single full pass
# stalled every shard for up to 428 ms with 50,000 users cached (benchmarks/bench_gc.py).
# Nothing of ours relies on cycles being freed promptly; they are still freed, less often.
GC_THRESHOLDS = (50_000, 20, 100)


def prepare_process() -> None:
    """Ready this process to train: the compiled update loaded (from numba's disk cache, or
    compiled on a first start) and the garbage collector tuned for the trainer."""
    warm_up()
    gc.collect()
    gc.freeze()  # what exists now (modules, the base) is never walked again
    gc.set_threshold(*GC_THRESHOLDS)


class RedisUnreachableError(redis.ConnectionError):
    """Redis did not answer for longer than the trainer's ``redis_outage_s``."""


@dataclass(frozen=True)
class TrainerConfig:
    """How a trainer works. ``fedlearn worker`` fills ``lease_ttl_ms`` and ``gating`` from the
    settings (whose defaults these are) and ``name``/``batch_size`` from its options; the rest
    are the trainer's own pacing."""

    name: str = "trainer"
    batch_size: int = 1000
    lease_ttl_ms: int = setting_default("trainer_lease_ttl_ms")
    idle_sleep_s: float = 0.005
    idle_sleep_max_s: float = 0.04
    # An idle trainer waits in one blocking XREADGROUP over its shards for at most this long
    # (and never past its next lease heartbeat, a third of the lease TTL): an event is picked
    # up as soon as it lands, and SIGTERM is answered within this time.
    max_block_ms: int = 500
    base_refresh_s: float = 1.0
    max_cached_users: int = 200_000
    # Item features are kept this long (a changed item's features reach the trainer at most
    # this late: ``trainer.catalog_cache``) and for at most about this many items.
    catalog_ttl_s: float = 1.0
    max_cached_items: int = 100_000
    eventlog_every_s: float = 1.0
    trim_every_s: float = 5.0
    # A Redis restart (seconds) is ridden out, keeping the leases (their TTL is longer);
    # beyond this the trainer stops with an error and its supervisor restarts it.
    redis_outage_s: float = 3.0
    gating: GateSettings = DEFAULT_GATING


@dataclass
class _Shard:
    """What the trainer keeps of an owned shard: its cached users (least recently used
    first; their deltas are in the trainer's table)."""

    users: OrderedDict[str, UserState] = field(default_factory=OrderedDict)
    recovering: bool = True  # pending entries of a previous owner come first
    # Users whose stored record could not be read, set aside with the next commit.
    dead: list[DeadLetter] = field(default_factory=list)

    def forget_users(self, table: DeltaTable | None) -> None:
        """Drop every cached user, from the cache and from ``table`` (they are reloaded from
        Redis, the truth), and redo pending entries first: after a failed or unknown commit
        the table may hold what Redis does not."""
        if table is not None:
            for user in self.users:
                table.drop(user)
        self.users.clear()
        self.dead.clear()
        self.recovering = True


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
        drift: DriftMonitor | None = None,
    ) -> None:
        from fedlearn.trainer.ownership import Ownership

        self.store = store
        self.clone = clone
        self.config = config or TrainerConfig()
        self.owner = new_owner_token(self.config.name)
        self.eventlog = eventlog
        self.drift = drift
        self.bases = BaseCache(store, refresh_s=self.config.base_refresh_s)
        self.catalog = CatalogCache(
            store.catalog, ttl_s=self.config.catalog_ttl_s, max_items=self.config.max_cached_items
        )
        self.shards: dict[int, _Shard] = {}
        # Every owned shard's cached users' deltas, in one table (made for the base's k on
        # first use): a pass applies the events of all its shards at once (``passes``).
        self.table: DeltaTable | None = None
        self.ownership = Ownership(
            store,
            self.owner,
            lease_ttl_ms=self.config.lease_ttl_ms,
            on_gain=self._gain,
            on_loss=self._loss,
        )
        self.applied_total = 0
        self._next_shard = 0  # where the next pass over the owned shards starts (``step``)
        # Whether the last pass found less than a batch: the trainer keeps up, so the next pass
        # reads every owned shard in one XREADGROUP (``step``).
        self._keeping_up = False
        self.telemetry = Publisher(store.telemetry, owner=self.owner, name=self.config.name)

    # -- ownership callbacks ----------------------------------------------------------------

    def _gain(self, shard: int) -> None:
        self.store.streams.ensure_group(shard)
        self.shards[shard] = _Shard()
        if self.eventlog:
            self.eventlog.forget(shard)

    def _loss(self, shard: int) -> None:
        state = self.shards.pop(shard, None)
        if state is not None:
            state.forget_users(self.table)
        if self.drift:
            self.drift.detectors.forget(shard)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set, then finish cleanly.

        The event log is drained by a thread of its own: its fsyncs would otherwise stall
        training every second (the freshness tail). An idle trainer waits in one blocking read
        over all its shards (``wait_and_work``). On a Redis Cluster, where one XREADGROUP
        cannot span shards (slots), a trainer owning several shards instead backs off from
        polling every ``idle_sleep_s`` to at most ``idle_sleep_max_s``.
        """
        started = time.perf_counter()
        prepare_process()
        log.info("update kernel ready in %.2f s", time.perf_counter() - started)
        heartbeat_every = self.config.lease_ttl_ms / 3000
        last_beat = -float("inf")
        idle = self.config.idle_sleep_s
        outage_since: float | None = None
        drainer = self._start_drainer(stop)
        trimmer = self._every(stop, "trim", self.config.trim_every_s, self.trim_streams)
        clean = redis_gone = False
        try:
            while not stop.is_set():
                now = time.monotonic()
                try:
                    if now - last_beat >= heartbeat_every:
                        self.ownership.maintain()
                        metrics.OWNED_SHARDS.set(len(self.ownership.owned))
                        last_beat = now
                    self.telemetry.maybe_publish(self.telemetry_state, now)
                    applied = self.step(deadline=last_beat + heartbeat_every)
                    if not applied:
                        applied = self.wait_and_work(last_beat + heartbeat_every - time.monotonic())
                except NoBaseError as exc:
                    log.warning("%s", exc)
                    stop.wait(1.0)
                    continue
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    outage_since = self._ride_out(exc, outage_since)
                    stop.wait(OUTAGE_POLL_S)
                    continue
                if outage_since is not None:
                    log.info("Redis answers again after %.1f s", time.monotonic() - outage_since)
                    outage_since = None
                if applied is None:  # no blocking read was possible: poll, backing off
                    stop.wait(idle)
                    idle = min(2 * idle, self.config.idle_sleep_max_s)
                else:
                    idle = self.config.idle_sleep_s
            clean = True
        except RedisUnreachableError:
            redis_gone = True
            raise
        finally:
            stop.set()  # on an error too: the drainer and the trimmer wait on it
            trimmer.join(DRAINER_JOIN_S)
            if drainer is not None:
                drainer.join(DRAINER_JOIN_S)
                if drainer.is_alive():
                    log.warning("the event log thread did not stop within %.0f s", DRAINER_JOIN_S)
            self.shutdown(clean=clean, redis_gone=redis_gone)

    def _ride_out(self, exc: redis.RedisError, since: float | None) -> float:
        """Wait out a short Redis outage (a restart), or raise when it lasts too long.

        After a failed call nobody knows whether the last commit was written, so every owned
        shard forgets its users (they are reloaded from Redis, the truth) and redoes its
        pending entries first: nothing is lost and nothing is applied twice.
        """
        now = time.monotonic()
        if since is None:
            log.warning("Redis does not answer (%s); retrying for %.0f s", exc,
                        self.config.redis_outage_s)  # fmt: skip
            since = now
        self.table = None
        for state in self.shards.values():
            state.forget_users(None)
        if now - since >= self.config.redis_outage_s:
            raise RedisUnreachableError(
                f"Redis did not answer for {now - since:.1f} s (last error: {exc})"
            ) from exc
        return since

    def _start_drainer(self, stop: threading.Event) -> threading.Thread | None:
        if self.eventlog is None:
            return None
        # A failed drain is retried next time; nothing is trimmed from the applied log.
        return self._every(stop, "eventlog", self.config.eventlog_every_s, self.drain_eventlog)

    @staticmethod
    def _every(
        stop: threading.Event, name: str, every_s: float, work: Callable[[], object]
    ) -> threading.Thread:
        """Run ``work`` every ``every_s`` seconds in a thread of its own until ``stop``; a
        failure is logged and the work tried again next time."""

        def loop() -> None:
            while not stop.wait(every_s):
                try:
                    work()
                except Exception:
                    log.exception("%s failed; retrying in %.0f s", name, every_s)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        return thread

    def trim_streams(self) -> None:
        """Drop acknowledged entries from the owned shards' streams.

        In a thread of its own: three round trips per shard (192 with 64 shards, 8-16 ms on
        an idle machine, several times that on a busy one) held up the training loop every
        ``trim_every_s``, and every event that landed meanwhile (the freshness tail). Trimming
        keeps everything from the oldest pending entry, so it is safe whoever owns the shard.
        """
        for shard in list(self.shards):
            self.store.streams.trim_acked(shard)

    def shutdown(self, *, clean: bool = True, redis_gone: bool = False) -> None:
        """Drain the event log of owned shards and release their leases.

        After a failure (``clean=False``) this is best effort and bounded: when Redis does not
        answer, nothing more is tried (the leases lapse by themselves within their TTL), and
        an error here never hides the one that stopped the trainer.
        """
        if redis_gone:
            return  # already said, and every call would wait out the client's retries
        if not clean:
            try:
                self.store.ping()
            except redis.RedisError as exc:
                log.warning(
                    "Redis does not answer (%s); leaving the leases to lapse within %d ms",
                    exc,
                    self.config.lease_ttl_ms,
                )
                return
        try:
            if self.eventlog:
                self.drain_eventlog()
            self.ownership.release_all()
            self.telemetry.withdraw()
        except Exception:
            if clean:
                raise
            log.exception("cleaning up after the failure failed too")

    def drain_eventlog(self) -> int:
        assert self.eventlog is not None
        moved = 0
        for shard in list(self.shards):
            while (n := self.eventlog.drain(shard)) > 0:
                moved += n
        return moved

    def step(self, deadline: float = math.inf) -> int:
        """One pass over the owned shards: at most one batch each. Returns events applied.

        A trainer that keeps up (its last pass found less than a batch) reads all its shards
        in one XREADGROUP: what waits is little, and one round trip instead of one per shard
        is what keeps freshness in milliseconds (with 64 shards, reading them one by one was
        44 % of the trainer's profile at 250 events/s, and an event that landed behind the
        pass waited for the whole of it). Otherwise a pass reads shard by shard, and as one
        over many shards (virtual shards: hundreds per trainer) with a backlog can outlast a
        lease, it stops at ``deadline`` (``time.monotonic()``, the next lease heartbeat) and
        the next pass starts at the first shard this one did not reach: every shard gets its
        turn and no lease lapses while its owner is busy with the others.
        """
        base = self.bases.current()
        if self._keeping_up and self._can_read_at_once():
            applied = self._read_and_work(base, block_ms=0)
        else:
            owned = sorted(self.shards)
            first = bisect.bisect_left(owned, self._next_shard)
            applied = 0
            for shard in owned[first:] + owned[:first]:
                if time.monotonic() >= deadline:
                    self._next_shard = shard
                    break
                if shard in self.shards:  # not lost by a commit earlier in this pass
                    applied += self.work_shard(shard, base)
        self._keeping_up = applied < self.config.batch_size
        return applied

    def wait_and_work(self, budget_s: float) -> int | None:
        """Wait up to ``budget_s`` (at most ``max_block_ms``) for new entries on the owned
        shards in one blocking XREADGROUP, and apply and commit what arrives. Returns the
        events applied, or None when no blocking read was possible (no shard owned, a shard
        still redoing a previous owner's entries, or several shards on a cluster)."""
        if not self._can_read_at_once():
            return None
        block_ms = min(self.config.max_block_ms, int(budget_s * 1000))
        if block_ms < 1:
            return 0  # the heartbeat is due first
        return self._read_and_work(self.bases.current(), block_ms=block_ms)

    def _can_read_at_once(self) -> bool:
        """Whether one XREADGROUP can read every owned shard: some are owned, none is still
        redoing a previous owner's entries, and they are not spread over a cluster's slots."""
        shards = self.shards
        if not shards or any(state.recovering for state in shards.values()):
            return False
        return len(shards) == 1 or self.store.streams.can_block_on_many

    def _read_and_work(self, base: Base, *, block_ms: int) -> int:
        """Read every owned shard in one XREADGROUP (waiting up to ``block_ms`` for a first
        entry; 0: not at all), then apply and commit each shard's batch."""
        batches = self.store.streams.read_many(
            list(self.shards), self.owner, count=self.config.batch_size, block_ms=block_ms
        )
        return self.process_many({s: screen_events(b) for s, b in batches.items()}, base)

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
        return self.process(shard, screen_events(batch), base)

    def process(self, shard: int, batch: Batch, base: Base) -> int:
        """Apply and commit one batch of ``shard`` (as ``screen_events`` returns it, with its
        users and items); returns the events applied."""
        return self.process_many({shard: batch}, base)

    def process_many(self, batches: Mapping[int, Batch], base: Base) -> int:
        """Apply and commit one batch of each of several shards; returns the events applied.

        A trainer that keeps up reads a few events from each of many shards at once; what it
        needs from Redis for all of them is read in one round trip of each kind (the users'
        records, the rankings' records, the catalog's items), and all their commits go in one
        more (``Streams.commit_batches``: each shard's commit is still its own atomic
        script). A round trip per shard and kind, each a wait for a core on a busy machine,
        was most of such a pass (BENCHMARKS.md, issue 12, "Seventh pass: a keeping-up pass in
        four round trips and one apply"). The batches are applied together on the trainer's
        one table where they can be (``passes``). One shard's refused commit (lease lost,
        stale) is handled as before and touches none of the others.
        """
        started = time.perf_counter()
        generation = self.bases.generation(base)
        self._load_users({s: b.users for s, b in batches.items()}, base, generation)
        predictions = self._prediction_records(batches)
        items = {item for batch in batches.values() for item in batch.items}
        items.discard(None)  # a forget or rebase entry names no item
        catalog = self.catalog.features(items) if items else {}
        settings, applied_at = self.clone(base), time.time()
        table = self.table_for(base)
        results: list[tuple[int, Batch, AppliedBatch, list[DeadLetter]]] = []
        commits = []
        for group in passes.groups(batches):
            together = {shard: batches[shard] for shard in group}
            recorded = passes.recorded_in(predictions, together)
            result = apply_batch(
                base,
                table,
                {u: self.shards[s].users[u] for s, b in together.items() for u in b.users},
                [entry for batch in together.values() for entry in batch.entries],
                settings,
                item_features=catalog.get,
                prediction_features=lambda pid, item, r=recorded: r.get((pid, item), {}).get(
                    "features"
                ),
                prediction_shown=lambda pid, item, r=recorded: r.get((pid, item)),
                applied_at=applied_at,
                gating=self.config.gating,
            )
            for shard, part in passes.split(result, together).items():
                batch, state = batches[shard], self.shards[shard]
                dead = [DeadLetter.of_rejected(r) for r in batch.rejected] + state.dead
                results.append((shard, batch, part, dead))
                commits.append(
                    {
                        "shard": shard,
                        "owner": self.owner,
                        "deltas": table.to_bytes_many(list(part.users)),
                        "last_ids": {u: str(s.last_event) for u, s in part.users.items()},
                        "entry_ids": batch.ids,
                        # One applied-log entry per batch, its lines encoded: one XADD, not
                        # one per event, and nothing for the event log's writer to decode.
                        "log_entries": [render_applied(part.log)] if part.applied else [],
                        "base": base.version,
                        "generation": generation,
                        "gates": {u: s.gate.to_bytes() for u, s in part.users.items()},
                        "dead_letters": dead,
                    }
                )
        outcomes = self.store.streams.commit_batches(commits)
        seconds = time.perf_counter() - started
        applied = 0
        for (shard, batch, result, dead), outcome in zip(results, outcomes, strict=True):
            if isinstance(outcome, LeaseLostError):
                log.warning(
                    "shard %d: lease lost before commit; its batch is left to the new owner",
                    shard,
                )
                self.ownership.lost(shard)
            elif isinstance(outcome, StaleCommitError):
                log.warning("shard %d: %s; reloading its users from Redis", shard, outcome)
                # reloading the users finds their unreadable records again
                self.shards[shard].forget_users(self.table)
            else:
                applied += self._committed(shard, batch, result, dead, base, seconds)
        return applied

    def _committed(
        self,
        shard: int,
        batch: Batch,
        result: AppliedBatch,
        dead: list[DeadLetter],
        base: Base,
        seconds: float,
    ) -> int:
        """Adopt what a committed batch changed (users' states, the cache's order), and tell
        the metrics, the drift monitor and the log; returns the events applied."""
        state = self.shards[shard]
        state.dead.clear()
        if result.rebase_notes:
            self._drop_rebase_notes(shard, result.rebase_notes)
        for letter in dead:
            log.warning("shard %d: dead-lettered %s", shard, letter.describe())
            metrics.DEAD_LETTERS.labels(reason=letter.kind).inc()
        for user, user_state in result.users.items():
            state.users[user] = user_state
            state.users.move_to_end(user)
        self._evict(state)
        self._observe(shard, batch, result, seconds)
        if self.drift:  # after the commit: what it sees was applied, exactly once
            self.drift.observe(
                shard, result.labels, result.predictions, result.base_predictions,
                result.log.get("features", []), base,
            )  # fmt: skip
        self.applied_total += result.applied
        return result.applied

    # -- helpers ----------------------------------------------------------------------------

    def table_for(self, base: Base) -> DeltaTable:
        """The trainer's table, for ``base``'s ``k`` (a base of another ``k`` restarts it:
        every shard's cached users are reloaded)."""
        if self.table is None or self.table.n_factors != base.n_factors:
            for state in self.shards.values():
                state.users.clear()
            self.table = DeltaTable(base.n_factors)
        return self.table

    def _load_users(
        self, users_of: Mapping[int, Iterable[str]], base: Base, generation: int
    ) -> None:
        """Put each shard's users (shard -> users) that it does not hold yet in its table and
        cache, from their stored records (one round trip for all the shards)."""
        table = self.table_for(base)  # a base of another k restarts it before the loads
        missing = {}
        for shard, named in users_of.items():
            state = self.shards[shard]
            users = [u for u in dict.fromkeys(named) if u not in state.users]
            if users:
                missing[shard] = users
        if not missing:
            return
        found = self.store.deltas.get_many_shards(missing)
        for shard, users in missing.items():
            state, records = self.shards[shard], found[shard]
            for user in users:
                self._load_user(state, table, user, records.get(user), generation)

    def _load_user(
        self,
        state: _Shard,
        table: DeltaTable,
        user: str,
        record: DeltaRecord | None,
        generation: int,
    ) -> None:
        if record is None:
            table.reset(user)
            state.users[user] = UserState(NEVER)
            return
        gate = self._read(state, record.user, "unreadable_gate", record.gate, Gate.from_bytes)
        if record.generation != generation:
            # A monthly retrain started a new generation: the clone restarts from the new
            # base (the old delta was archived by the job), but its place in the stream is
            # kept so that nothing is applied twice.
            delta = None
        else:
            delta = self._read(state, record.user, "unreadable_delta", record.delta, decode_rows)
        if delta is None:
            table.reset(user)
        else:
            table.put_rows(user, delta)
        state.users[user] = UserState(record.last_event, gate or Gate())

    @staticmethod
    def _read(
        state: _Shard, user: str, kind: str, blob: bytes, parse: Callable[[bytes], T]
    ) -> T | None:
        """``parse(blob)``, or None with a dead letter when the stored record is unreadable
        (the user then restarts that part from scratch; their place in the stream is kept)."""
        try:
            return parse(blob)
        except UNREADABLE as exc:
            state.dead.append(DeadLetter(kind=kind, reason=str(exc), user=user, raw=bytes(blob)))
            return None

    def _prediction_records(
        self, batches: Mapping[int, Batch]
    ) -> dict[int, dict[tuple[str, str], dict[str, Any]]]:
        """Per shard, what the rank call recorded of each (prediction_id, item) its batch
        names: the features, score, slot and propensity, and the ranking's policy; the item
        shown in slot 0 also gets the ranking's candidates (``[{"item", "features"}]`` in the
        record's order), which its event-log line carries for off-policy evaluation (only
        slot 0's: the estimand is the top slot's, and the log stays small)."""
        wanted = {
            # (id, user): a record is found only for its own user's events
            shard: [(pid, user) for pid, user in zip(b.prediction_ids, b.users, strict=True) if pid]
            for shard, b in batches.items()
            if any(b.prediction_ids)
        }
        if not wanted:
            return {}
        found: dict[int, dict[tuple[str, str], dict[str, Any]]] = {}
        for shard, records in self.store.predictions.get_predictions_many(wanted).items():
            of_shard = found[shard] = {}
            for pid, record in records.items():
                items = record.get("items") or {}
                for item, scored in items.items():
                    scored["policy"] = record.get("policy")  # a fresh decode: no copy needed
                    of_shard[(pid, item)] = scored
                    if scored.get("slot") == 0:
                        scored[CANDIDATES] = [
                            {"item": other, "features": of["features"]}
                            for other, of in items.items()
                        ]
        return found

    def _drop_rebase_notes(self, shard: int, notes: list[tuple[str, str]]) -> None:
        """Delete the rebase notes the committed batch passed. Best effort: a note left behind
        is never read again (the user's last_event is past its entry) and expires with its
        TTL, so an error here is not the batch's."""
        try:
            self.store.streams.drop_rebase_notes(shard, notes)
        except redis.RedisError as exc:
            log.debug("shard %d: rebase notes left to expire (%s)", shard, exc)

    def _evict(self, state: _Shard) -> None:
        while len(state.users) > self.config.max_cached_users:
            user, _ = state.users.popitem(last=False)
            if self.table is not None:
                self.table.drop(user)

    def _observe(self, shard: int, batch: Batch, result: AppliedBatch, seconds: float) -> None:
        label = str(shard)
        metrics.BATCH_SECONDS.observe(seconds)
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.EVENTS_APPLIED.labels(shard=label).inc(result.applied)
        metrics.EVENTS_SKIPPED.labels(shard=label).inc(result.skipped)
        # observe_freshness keeps at most 64 events of a few batches: parse only about as many
        # ids of this one (one per entry was a per-event cost of the trainer).
        sample = batch.entries[:: max(1, len(batch.entries) // 64)]
        accepted_ms = np.fromiter((int(e.id.split("-", 1)[0]) for e in sample), float)
        metrics.observe_freshness(accepted_ms, time.time() * 1000)
        if result.applied:
            metrics.observe_progressive(
                result.labels, result.predictions, result.base_predictions, result.positions
            )

    @property
    def owned(self) -> set[int]:
        return set(self.ownership.owned)

    def telemetry_state(self) -> TrainerState:
        """What the telemetry snapshot needs of this trainer now (``Publisher``).

        ``Gate.serve`` gives the base exactly when ``p_clone < 0.5``, that is when the base's
        discounted loss is below the clone's (``eta > 0``); comparing the losses avoids an
        ``exp`` per user, which matters with 100,000 users in memory.
        """
        clone = base = 0
        for shard in list(self.shards.values()):
            for state in shard.users.values():
                if state.gate.loss_base < state.gate.loss_clone:
                    base += 1
                else:
                    clone += 1
        return TrainerState(self.owned, self.applied_total, clone, base)
