"""The trainer end to end: stream read, test-then-train, delta write + ack, in events/s.

    .venv/bin/python benchmarks/bench_trainer.py [--events 200000] [--batch 1000] [--profile]
        [--ranked 0.7]

The shard streams are pre-filled with ``--events`` synthetic events
(``fedlearn.data.synthetic``: 5,000 users with Zipf activity, 2,000 items with genres, an hour
context) through ``store.streams.append_events``, as the API appends them; then one
:class:`Trainer`, in this process, owns all ``FEDLEARN_N_SHARDS`` shards and drains
them: claim/XREADGROUP, load the users' deltas, ``apply_batch`` (features, the shard's
``DeltaTable.learn``, shadow base score), the commit script (deltas, ``last_event``, XACK,
applied log), metrics.
Timed from the first step to the last event committed. The trainer is single-threaded, so its
events/s is per core; Redis works beside it on the other core, and its CPU seconds are reported
too. With ``--ranked SHARE``, that share of the events names a ranking (``prediction_id``), as
the live service's clicks and skips mostly do (``loadtests/users.py``): see :func:`rank_events`.
The durable event log (JSON Lines on disk) is drained every second as ``fedlearn worker``
does, and timed apart.

Also measured: the Redis memory of the users' delta records (``MEMORY USAGE`` of each hash,
every user), and with ``--profile`` where the trainer's time goes (cProfile; the profiler
slows Python code more than Redis waits, so shares are indicative).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from fedlearn.config import load_settings
from fedlearn.data.synthetic import SyntheticConfig, generate
from fedlearn.devtools import EmbeddedRedis
from fedlearn.model import Base, event_features
from fedlearn.model.policy import Policy, rank_with_policy
from fedlearn.store import Store, keys
from fedlearn.store.items import Catalog
from fedlearn.store.predictions import PredictionQuota
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.eventlog import EventLogWriter
from fedlearn.trainer.trainer import Trainer, TrainerConfig, prepare_process

N_SHARDS = load_settings().n_shards  # the shipped default unless FEDLEARN_N_SHARDS says
N_USERS = 5000
N_ITEMS = 2000
VERSION = "bench-trainer"
CLONE = CloneSettings(lr=0.1, l2=0.0, bias_lr=0.1)
RANKED_SLOTS = 4  # items per ranking: each ranking covers a user's next 4 ranked events
# The rank route's explore policy (``Policy.of``, as ``explore_policy`` names it), so records
# carry real slots and propensities.
RANK_POLICY = Policy.of("epsilon", 0.1, 1.0)
# Large enough that no record is dropped before its events are applied: in the live service
# a user's events follow their ranking within seconds, well inside the default quota.
RANK_QUOTA = PredictionQuota(max_records=1 << 20, max_bytes=1 << 30)

# (label, file suffix, function name): the trainer's stages, for the profile breakdown.
STAGES = (
    ("read (XREADGROUP/claim + parse)", "store/streams.py", "read_batch"),
    ("read (XREADGROUP/claim + parse)", "store/streams.py", "claim"),
    ("load users' deltas", "trainer/trainer.py", "_load_users"),
    ("catalog features", "store/items.py", "features"),
    ("apply_batch (features, table, shadow)", "trainer/apply.py", "apply_batch"),
    ("  of which DeltaTable.learn (rows + the FM math)", "model/table.py", "learn"),
    ("  of which features_of (event -> features)", "trainer/apply.py", "features_of"),
    ("serialize deltas (to_bytes_many)", "model/table.py", "to_bytes_many"),
    ("commit script (validate + Redis)", "store/streams.py", "commit_batches"),
    ("metrics (_observe)", "trainer/trainer.py", "_observe"),
)


def prefill(
    store: Store, n_events: int, *, seed: int = 1, publish: bool = True, ranked: float = 0.0
) -> Base:
    """Publish a base and catalog and append ``n_events`` events to the shard streams (with
    ``publish=False`` the base is only returned: ``bench_scaleout.py`` publishes it later);
    with ``ranked``, that share of them names a ranking stored first (:func:`rank_events`)."""
    config = SyntheticConfig(
        n_users=N_USERS, n_items=N_ITEMS, events_per_user=max(1, n_events // N_USERS), seed=seed
    )
    log = generate(config)
    items = log.items()
    Catalog(store.client).put_items({i: {"title": i, "features": f} for i, f in items.items()})
    genres = sorted({name for features in items.values() for name in features})
    base = Base.fresh([f"item={i}" for i in items] + genres, 10, version=VERSION)
    if publish:
        store.bases.put_base(base.version, base.to_bytes(), {"generation": 0})
        store.bases.set_current(base.version)
    by_shard: dict[int, list[dict[str, Any]]] = {}
    now = time.time()
    for event in log.events(stop=n_events):
        record = {k: v for k, v in event.to_dict().items() if v is not None}
        record["received_at"] = now
        by_shard.setdefault(store.shard_of(event.user), []).append(record)
    if ranked:
        rng = np.random.default_rng(seed)
        for shard, records in by_shard.items():
            rank_events(store, shard, records, items, ranked, rng)
    for shard, records in by_shard.items():
        for start in range(0, len(records), 5000):
            store.streams.append_events(shard, records[start : start + 5000])
    return base


def rank_events(
    store: Store,
    shard: int,
    records: list[dict[str, Any]],
    items: dict[str, dict[str, float]],
    share: float,
    rng: np.random.Generator,
) -> None:
    """Make ``share`` of ``records`` (one shard's events, in order) name a ranking, recorded
    through ``store.predictions`` in the rank route's shape (``serving.clones.rank``'s record:
    each item's features as ``event_features`` gives them, a score, its slot and propensity
    under :data:`RANK_POLICY`, the policy): each ranking holds the items of a user's next
    :data:`RANKED_SLOTS` ranked events, ranked with the context of the first of them."""
    pending: dict[str, list[dict[str, Any]]] = {}
    chosen = rng.random(len(records)) < share
    for record, named in zip(records, chosen, strict=True):
        if named:
            group = pending.setdefault(record["user"], [])
            group.append(record)
            if len(group) == RANKED_SLOTS:
                _rank(store, shard, pending.pop(record["user"]), items, rng)
    for group in pending.values():
        _rank(store, shard, group, items, rng)


def _rank(
    store: Store,
    shard: int,
    events: list[dict[str, Any]],
    items: dict[str, dict[str, float]],
    rng: np.random.Generator,
) -> None:
    """Store one ranking of ``events``' items (one user's) and name it in each of them."""
    user, context = events[0]["user"], events[0].get("context")
    ids = list(dict.fromkeys(event["item"] for event in events))
    scores = rng.random(len(ids))
    order, propensities = rank_with_policy(scores, len(ids), RANK_POLICY, rng)
    scored: dict[str, dict[str, Any]] = {
        item: {"features": event_features(user, item, context, items.get(item)), "score": p}
        for item, p in zip(ids, scores.tolist(), strict=True)
    }
    for slot, (i, propensity) in enumerate(zip(order.tolist(), propensities.tolist(), strict=True)):
        scored[ids[i]].update(slot=slot, propensity=propensity)
    pid = uuid.uuid4().hex
    record = {
        "user": user, "base_version": VERSION, "created_at": time.time(),
        "policy": RANK_POLICY.as_dict(), "items": scored,
    }  # fmt: skip
    store.predictions.put_predictions(shard, {pid: record}, 3600, quota=RANK_QUOTA)
    for event in events:
        event["prediction_id"] = pid


def _redis_cpu(store: Store) -> float:
    info = store.client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def drain(
    store: Store,
    n_events: int,
    *,
    batch: int = 1000,
    eventlog: Path | None = None,
    profile: bool = False,
    timeout: float = 600.0,
    gc_thresholds: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """Time one in-process trainer draining ``n_events`` from the pre-filled streams.

    ``gc_thresholds`` replaces the trainer's collector thresholds (``bench_gc.py`` compares).

    It loops as ``Trainer.run`` does: one batch per owned shard per step, the lease heartbeat
    every third of its lifetime, and with ``eventlog`` the durable log drained to files every
    second (timed apart, so the figure is given with and without it).
    """
    writer = EventLogWriter(store, eventlog) if eventlog is not None else None
    config = TrainerConfig(name="bench", batch_size=batch)
    trainer = Trainer(store, lambda _base: CLONE, config, eventlog=writer)
    trainer.ownership.maintain()
    prepare_process()  # as Trainer.run does at start; the kernel's cost is bench_coldstart.py's
    if gc_thresholds is not None:
        gc.set_threshold(*gc_thresholds)
    heartbeat_s = config.lease_ttl_ms / 3000
    profiler = cProfile.Profile() if profile else None
    redis_cpu = _redis_cpu(store)
    cpu = time.process_time()
    started = last_beat = last_log = time.perf_counter()
    log_s = 0.0
    if profiler:
        profiler.enable()
    while trainer.applied_total < n_events and time.perf_counter() - started < timeout:
        trainer.step(deadline=time.monotonic() + heartbeat_s - (time.perf_counter() - last_beat))
        now = time.perf_counter()
        if now - last_beat >= heartbeat_s:
            trainer.ownership.maintain()
            last_beat = now
        if writer is not None and now - last_log >= config.eventlog_every_s:
            trainer.drain_eventlog()
            last_log = time.perf_counter()
            log_s += last_log - now
    if writer is not None:  # what is still in the applied logs goes to disk too
        now = time.perf_counter()
        trainer.drain_eventlog()
        log_s += time.perf_counter() - now
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    trainer_cpu = time.process_time() - cpu
    applied = trainer.applied_total
    result: dict[str, Any] = {
        "events": applied,
        "batch": batch,
        "seconds": seconds,
        "events_per_s": applied / seconds,
        "eventlog": writer is not None,
        "eventlog_s": log_s,
        "events_per_s_without_log": applied / (seconds - log_s),
        "trainer_cpu_s": trainer_cpu,
        "events_per_cpu_s": applied / trainer_cpu if trainer_cpu else 0.0,
        "redis_cpu_s": _redis_cpu(store) - redis_cpu,
    }
    trainer.ownership.release_all()
    if profiler:
        result["profile"] = stages(profiler)
    return result


def stages(profiler: cProfile.Profile) -> dict[str, float]:
    """Share of the profiled time spent in each stage of ``STAGES`` (cumulative)."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = max(ct for (_f, _l, _n), (_cc, _nc, _tt, ct, _c) in stats.items())
    shares: dict[str, float] = {}
    for label, suffix, name in STAGES:
        for (filename, _line, func), (_cc, _nc, _tt, ct, _c) in stats.items():
            if func == name and filename.endswith(suffix):
                shares[label] = shares.get(label, 0.0) + ct / total
    return shares


def delta_memory(store: Store) -> dict[str, Any]:
    """``MEMORY USAGE`` of every user's delta hash, and the events behind them."""
    sizes, events = [], []
    for shard in store.shards:
        users = list(store.deltas.users(shard))
        for start in range(0, len(users), 500):
            chunk = users[start : start + 500]
            pipe = store.client.pipeline(transaction=False)
            for user in chunk:
                pipe.memory_usage(keys.delta(shard, user), samples=0)
            sizes += [int(n or 0) for n in pipe.execute()]
            events += [r.events for r in store.deltas.get_many(shard, chunk).values()]
    if not sizes:
        return {"users": 0}
    arr = np.array(sizes)
    return {
        "users": len(sizes),
        "bytes_mean": float(arr.mean()),
        "bytes_p50": float(np.percentile(arr, 50)),
        "bytes_p99": float(np.percentile(arr, 99)),
        "events_mean": float(np.mean(events)),
        "redis_used_memory": int(store.client.info("memory")["used_memory"]),
    }


def measure(
    redis_url: str,
    n_events: int,
    *,
    batch: int = 1000,
    eventlog: Path | None = None,
    profile: bool = False,
    ranked: float = 0.0,
) -> dict[str, Any]:
    with Store.from_url(redis_url, N_SHARDS, stream_maxlen=max(100_000, 2 * n_events)) as store:
        store.client.flushall()
        prefill(store, n_events, ranked=ranked)
        result = drain(store, n_events, batch=batch, eventlog=eventlog, profile=profile)
        result["memory"] = delta_memory(store)
        store.client.flushall()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="where the time goes")
    parser.add_argument(
        "--ranked", type=float, default=0.0, help="share of events naming a ranking (0..1)"
    )
    parser.add_argument("--no-eventlog", action="store_true", help="do not write the event log")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        log = None if args.no_eventlog else Path(tmp) / "eventlog"
        r = measure(
            server.url, args.events, batch=args.batch, eventlog=log, profile=args.profile,
            ranked=args.ranked,
        )  # fmt: skip
    print(
        f"trainer: {r['events']:,} events in {r['seconds']:.2f} s = {r['events_per_s']:,.0f}/s "
        f"(batch {r['batch']}); {r['events_per_s_without_log']:,.0f}/s without the "
        f"{r['eventlog_s']:.2f} s of event log drains; trainer CPU {r['trainer_cpu_s']:.2f} s "
        f"({r['events_per_cpu_s']:,.0f} events per CPU-second), Redis CPU "
        f"{r['redis_cpu_s']:.2f} s"
    )
    m = r["memory"]
    print(
        f"deltas in Redis: {m['users']:,} users, {m['events_mean']:.1f} events each on "
        f"average; MEMORY USAGE mean {m['bytes_mean']:,.0f} B, p50 {m['bytes_p50']:,.0f} B, "
        f"p99 {m['bytes_p99']:,.0f} B"
    )
    for label, share in r.get("profile", {}).items():
        print(f"  {label:<45} {100 * share:5.1f} %")


if __name__ == "__main__":
    main()
