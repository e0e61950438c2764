"""Capacity: measured unit costs, rounds at 100k / 300k / 1M synthetic users, a fitted model.

    .venv/bin/python benchmarks/bench_scale.py                       # ~30 min on 2 cores
    .venv/bin/python benchmarks/bench_scale.py --quick               # a minute: small sizes
    .venv/bin/python benchmarks/bench_scale.py --users 100000,300000 --skip-units

1. Unit costs (``scale_units.py``): CPU-seconds per ingested event (the API under gunicorn),
   per applied event (a ``fedlearn worker``), Redis CPU and bytes per event and per user,
   and a base's bytes and encode / decode cost at the catalog's size.
2. Rounds: for each ``--users`` size, a base of ``--items`` item rows (k = 10) is published,
   every user gets a synthetic delta (20..50 rows, items by popularity: what
   ``aggregate/synthetic.py`` draws) written through the store's commit script, and an event
   log of recent events is laid out for the shadow check. Then one round runs on two Celery
   workers (the chord: a map task per shard, reduce with its checks and shadow check,
   publish, promote with its rebase), and the same round again step by step in this process,
   each step's CPU-seconds taken with ``time.process_time`` and Redis' ``INFO cpu``. A size
   whose whole round would take Redis past ``--max-redis-gb`` (estimated from the sizes
   before it) runs no Celery round, and its inline promotion covers only the shards that
   fit: the output says so, and per-user figures count the promoted users only.
3. A least-squares fit, linear in users, of each step's CPU, and the 10M-user plan computed
   from it (``scale_plan.py``), printed as the tables docs/SCALE.md quotes.

Everything runs against an embedded redis-server on 127.0.0.1 in a temporary folder (AOF,
fsync off, no background rewrite), flushed after each size and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from bench_round import PeakRss, celery_workers
from scale_plan import ITEMS, fit_lines, plan_tables
from scale_units import base_costs, ingest_and_apply, redis_figures, since, tree_cpu

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.mapper import map_shard
from fedlearn.aggregate.promote import rebase_shard
from fedlearn.aggregate.rebase import ShareTable
from fedlearn.aggregate.round import TERMINAL, RoundStatus
from fedlearn.aggregate.run import begin_round, create_round, promote_round, reduce_round, rounds_of
from fedlearn.aggregate.synthetic import publish, random_deltas, write_deltas
from fedlearn.data.eventlog import day_of, shard_dir
from fedlearn.devtools import EmbeddedRedis
from fedlearn.jobs.app import START_ROUND
from fedlearn.model import Base
from fedlearn.store import Store, keys

N_SHARDS = 8
K = 10
BLOCK = 10_000  # users generated and written at a time: bounded memory in this process
SHADOW_EVENTS = 5000
WORKER_ENV = {
    "FEDLEARN_N_SHARDS": str(N_SHARDS),  # the measured points ran at 8 (docs/SCALE.md's formulas)
    "FEDLEARN_STREAM_MAXLEN": "100000000",  # a million users' rebase entries, no trainer
    "FEDLEARN_AGGREGATION_TASK_TIME_LIMIT_S": "7200",
    "FEDLEARN_AGGREGATION_LOCK_TTL_S": "7200",
}


def write_shadow_log(folder: Path, n_items: int, rng: np.random.Generator) -> Path:
    """``SHADOW_EVENTS`` recent records in the event log's format, for the shadow check."""
    now = time.time()
    lines = [
        orjson.dumps({
            "event_id": f"shadow-{i}", "user": f"u0-{i % 500}", "ts": now - i,
            "signal": "click" if rng.random() < 0.3 else "skip",
            "features": {f"item={rng.zipf(1.3) % n_items}": 1.0, f"hour={i % 24}": 1.0},
        })
        for i in range(SHADOW_EVENTS)
    ]  # fmt: skip
    part = shard_dir(folder, 0)
    part.mkdir(parents=True, exist_ok=True)
    (part / f"{day_of(now)}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def fill(store: Store, n_users: int, n_items: int, seed: int) -> dict[str, float]:
    """A fresh base of ``n_items`` items and ``n_users`` synthetic deltas on it."""
    store.client.flushall()
    names = [f"item={i}" for i in range(n_items)] + [f"hour={h}" for h in range(24)]
    publish(store, Base.fresh(names, K, version="1"))
    before = redis_figures(store)["memory"]
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for start in range(0, n_users, BLOCK):
        block = random_deltas(rng, min(BLOCK, n_users - start), n_factors=K, n_items=n_items,
                              prefix=f"u{start}-")  # fmt: skip
        write_deltas(store, block, base="1")
    return {
        "fill_s": time.perf_counter() - started,
        "redis_bytes_per_user": (redis_figures(store)["memory"] - before) / n_users,
    }


def reset(store: Store, version: str) -> None:
    """Back to before the round: no snapshots, the first base current, and the published
    version's rebase entries and notes gone (a trainer would have consumed the entries): the
    same work again, without holding two rounds' entries in memory."""
    for shard in range(N_SHARDS):
        rounds_of(store).clear_snapshots(shard)
        store.client.delete(keys.stream(shard), keys.rebase_notes(shard, version))
    store.bases.set_current("1")


def celery_round(
    store: Store, app: Any, workers: dict[str, Any], config: AggregationConfig
) -> dict[str, Any]:
    """One round on the Celery workers; wall times of its steps from the round's record."""
    rounds = rounds_of(store)
    round_id = create_round(rounds, config, trigger="bench-scale")
    cpu0 = {name: tree_cpu(p.pid) for name, p in workers.items()}
    redis0 = redis_figures(store)
    sampler = PeakRss({name: p.pid for name, p in workers.items()})
    sampler.start()
    started = time.perf_counter()
    app.send_task(START_ROUND, args=[round_id])
    while (record := rounds.get(round_id) or {})["status"] not in TERMINAL:
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    peak = sampler.stop()
    if record["status"] != RoundStatus.DONE:
        raise SystemExit(f"round {round_id} ended {record['status']}: {record.get('error')}")
    result = record["result"]
    redis = since(redis0, redis_figures(store))
    return {
        "celery_round_s": seconds,
        "celery_map_s_max": max(s["seconds"] for s in result["shards"].values()),
        "celery_map_s_sum": sum(s["seconds"] for s in result["shards"].values()),
        "celery_reduce_s": result["reduce_seconds"],
        "celery_promote_s": record["finished_at"] - record["published_at"],
        "celery_workers_cpu_s": sum(tree_cpu(p.pid) - cpu0[n] for n, p in workers.items()),
        "celery_peak_rss_mb": max(peak.values()) / 2**20,
        "celery_redis_cpu_s": redis["cpu_s"],
        "celery_redis_net_bytes": redis["net_in"] + redis["net_out"],
        "celery_version": result["version"],
    }


def promote_some(store: Store, round_id: str, shards: int) -> None:
    """``promote_round``'s work for the first ``shards`` shards only: what fits in memory."""
    rounds = rounds_of(store)
    record = rounds.get(round_id) or {}
    table = ShareTable.from_bytes(rounds.get_shares(record["new_version"]) or b"")
    config = AggregationConfig.from_json(record["config"])
    for shard in range(shards):
        rebase_shard(store, rounds, record, shard, table, config)
        rounds.promote(shard, round_id, rebased=True)


def inline_round(store: Store, config: AggregationConfig, promote_shards: int) -> dict[str, Any]:
    """The round's steps in this process: CPU-seconds of each (ours and Redis'), and what
    the promotion left in Redis per participant (stream entries, rebase notes, snapshots)."""
    rounds = rounds_of(store)
    round_id = create_round(rounds, config, trigger="bench-scale-inline")
    begin_round(store, rounds, round_id)
    steps: dict[str, tuple[float, float, float]] = {}

    def step(name: str, work: Any) -> Any:
        cpu, redis, wall = time.process_time(), redis_figures(store), time.perf_counter()
        out = work()
        after = redis_figures(store)
        steps[name] = (
            time.process_time() - cpu,
            after["cpu_s"] - redis["cpu_s"],
            after["net_in"] + after["net_out"] - redis["net_in"] - redis["net_out"],
        )
        row[f"{name}_wall_s"] = time.perf_counter() - wall
        return out

    row: dict[str, Any] = {"promote_shards": promote_shards}
    step("map", lambda: [map_shard(store, rounds, round_id, s) for s in range(N_SHARDS)])
    summary = step("reduce", lambda: reduce_round(store, rounds, round_id))
    if promote_shards == N_SHARDS:
        step("promote", lambda: promote_round(store, rounds, round_id))
    else:
        step("promote", lambda: promote_some(store, round_id, promote_shards))
    promoted = sum(store.client.hlen(keys.snapshots(s)) for s in range(promote_shards))
    for name, (ours, redis, net) in steps.items():
        per = promoted if name == "promote" else summary["users"]  # promote: its shards only
        row.update({f"{name}_py_cpu_s": ours * summary["users"] / per,
                    f"{name}_redis_cpu_s": redis * summary["users"] / per,
                    f"{name}_net_bytes": net * summary["users"] / per})  # fmt: skip
    memory = {
        name: sum(int(store.client.memory_usage(key(s), samples=0) or 0)
                  for s in range(promote_shards)) / max(promoted, 1)
        for name, key in (("snapshot", keys.snapshots), ("rebase_entry", keys.stream),
                          ("rebase_note", lambda s: keys.rebase_notes(s, summary["version"])))
    }  # fmt: skip
    row.update({f"{name}_bytes_per_user": v for name, v in memory.items()})
    row.update(users=summary["users"], rows_updated=summary["rows_updated"],
               shadow_scored=summary.get("shadow", {}).get("scored"),
               redis_peak_bytes=redis_figures(store)["memory"])  # fmt: skip
    return row


def one_size(
    store: Store, app: Any, workers: dict[str, Any], n_users: int, n_items: int, log: Path,
    per_user: float, max_bytes: float, celery_max_users: int,
) -> dict[str, Any]:  # fmt: skip
    """Fill, then the Celery round (if a whole round fits in ``max_bytes`` of Redis at
    ``per_user`` bytes each) and the inline round (its promotion on as many shards as fit)."""
    row: dict[str, Any] = {"users": n_users, "items": n_items, "load_before": os.getloadavg()}
    row.update(fill(store, n_users, n_items, seed=n_users))
    config = AggregationConfig(
        strategy="fedavg", min_users=1, lock_ttl_s=7200, monthly_eventlog_dir=str(log),
        shadow_events=SHADOW_EVENTS,
    )  # fmt: skip
    fits = int(N_SHARDS * (max_bytes - redis_figures(store)["memory"]) / (n_users * per_user))
    if n_users > celery_max_users:
        print(f"{n_users:,} users: no Celery round (--celery-max-users)", flush=True)
    elif fits >= N_SHARDS:
        row.update(celery_round(store, app, workers, config))
        reset(store, row["celery_version"])
    else:
        print(f"{n_users:,} users: a whole round needs ~{n_users * per_user / 2**30:.1f} GB "
              f"more of Redis, over --max-redis-gb: no Celery round; the inline promotion "
              f"runs on {max(fits, 1)} of {N_SHARDS} shards", flush=True)  # fmt: skip
    row.update(inline_round(store, config, min(max(fits, 1), N_SHARDS)))
    row["load_after"] = os.getloadavg()
    store.client.flushall()
    return row


def round_extra_bytes(row: dict[str, Any]) -> float:
    """Redis bytes a round adds per participant: candidate and snapshot, entry and note."""
    return (
        2 * row["snapshot_bytes_per_user"]
        + row["rebase_entry_bytes_per_user"]
        + row["rebase_note_bytes_per_user"]
    )


def rounds_table(rows: list[dict[str, Any]]) -> str:
    head = ("| users | items | fill (s) | Celery round (s): all / map slowest shard / reduce "
            "/ promote | CPU (s) map / reduce / promote | Redis CPU (s) map / reduce / promote "
            "| promoted shards | B per user: delta, snapshot / per round: entry, note "
            "| Redis peak (MB) | rows updated | shadow | load before -> after |")  # fmt: skip
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        celery = (
            f"{r['celery_round_s']:.1f} / {r['celery_map_s_max']:.1f} / "
            f"{r['celery_reduce_s']:.1f} / {r['celery_promote_s']:.1f}"
            if "celery_round_s" in r else "not run"
        )  # fmt: skip
        lines.append(
            f"| {r['users']:,} | {r['items']:,} | {r['fill_s']:.0f} | {celery} | "
            f"{r['map_py_cpu_s']:.1f} / {r['reduce_py_cpu_s']:.1f} / {r['promote_py_cpu_s']:.1f}"
            f" | {r['map_redis_cpu_s']:.1f} / {r['reduce_redis_cpu_s']:.1f} / "
            f"{r['promote_redis_cpu_s']:.1f} | {r['promote_shards']} of {N_SHARDS} | "
            f"{r['redis_bytes_per_user']:,.0f}, {r['snapshot_bytes_per_user']:,.0f} / "
            f"{r['rebase_entry_bytes_per_user']:,.0f}, {r['rebase_note_bytes_per_user']:,.0f} | "
            f"{r['redis_peak_bytes'] / 2**20:,.0f} | {r['rows_updated']:,} | "
            f"{'scored' if r['shadow_scored'] else 'not scored'} | "
            f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} |"
        )
    return "\n".join(lines)


def run_rounds(
    sizes: list[int], n_items: int, max_redis_gb: float, folder: Path, out: dict[str, Any],
    save: Path | None, celery_max_users: int,
) -> None:  # fmt: skip
    """Each size in turn into ``out["rounds"]``, saved to ``save`` after each one (a run
    stopped during a long size keeps the sizes before it)."""
    rows: list[dict[str, Any]] = out.setdefault("rounds", [])
    with (
        EmbeddedRedis(folder / "redis", appendfsync="no") as server,
        celery_workers(server.url, folder / "data", folder, WORKER_ENV) as (workers, app),
    ):
        store = Store.from_url(server.url, N_SHARDS, stream_maxlen=10**8)
        store.client.config_set("auto-aof-rewrite-percentage", 0)
        log = write_shadow_log(folder / "eventlog", n_items, np.random.default_rng(7))
        print(orjson.dumps({"base": base_costs(n_items, store)}).decode(), flush=True)
        extra = 25_000.0  # bytes a round adds per participant, until a size measured it
        for n in sizes:
            row = one_size(store, app, workers, n, n_items, log, extra, max_redis_gb * 2**30,
                           celery_max_users)  # fmt: skip
            extra = round_extra_bytes(row)
            rows.append(row)
            print(rounds_table([row]).splitlines()[-1], flush=True)
            if save:
                save.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="100000,300000,1000000", help="sizes, in this order")
    parser.add_argument("--items", type=int, default=1_000_000, help="item rows of the base")
    parser.add_argument("--quick", action="store_true", help="2k / 5k users, 20k items")
    parser.add_argument("--skip-units", action="store_true", help="rounds only")
    parser.add_argument("--unit-requests", type=int, default=4000, help="ingest requests")
    parser.add_argument("--max-redis-gb", type=float, default=10.0)
    parser.add_argument("--skip-rounds", action="store_true", help="unit costs only")
    parser.add_argument("--celery-max-users", type=int, default=10**9,
                        help="larger sizes run the inline round only (time)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every figure here too")
    parser.add_argument("--plan-from", type=Path, nargs="+", help="measure nothing: print the "
                        "tables and plan from these --json files (units: the median)")  # fmt: skip
    args = parser.parse_args()
    if args.plan_from:
        print_from(args.plan_from)
        return
    # a SIGTERM unwinds like Ctrl-C: the workers and Redis stop, the temporary folder goes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(s) for s in args.users.split(",")]
    n_items, requests = args.items, args.unit_requests
    if args.quick:
        sizes, n_items, requests = [2000, 5000], 20_000, 400
    print(f"load average at start: {os.getloadavg()}", flush=True)
    out: dict[str, Any] = {"command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = Path(tmp)
        if not args.skip_units:
            with EmbeddedRedis(folder / "units", appendfsync="everysec") as server:
                out["units"] = ingest_and_apply(
                    server.url, folder, n_users=max(requests // 5, 1), requests=requests,
                    batch=10,
                )  # fmt: skip
            out["units"]["load"] = os.getloadavg()
            print(orjson.dumps({"units": out["units"]}, option=orjson.OPT_INDENT_2).decode())
        if not args.skip_rounds:
            run_rounds(sizes, n_items, args.max_redis_gb, folder, out, args.json,
                       args.celery_max_users)  # fmt: skip
    out["load_end"] = os.getloadavg()
    print(f"load average at end: {out['load_end']}")
    if args.json:
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    report(out.get("units"), out.get("rounds", []))


def report(units: dict[str, Any] | None, rows: list[dict[str, Any]]) -> None:
    print(rounds_table(rows))
    if len(rows) >= 2:
        # the plan's base: its size is the format's arithmetic, the same on every machine
        names = [f"item={i}" for i in range(ITEMS)] + [f"hour={h}" for h in range(24)]
        base_bytes = len(Base.fresh(names, K, version="plan").to_bytes())
        print(plan_tables(units, fit_lines(rows), rows, base_bytes=base_bytes))


def print_from(files: list[Path]) -> None:
    """The tables and the plan from earlier runs' ``--json`` files: every round row, and
    the median of each unit cost over the runs that measured them."""
    runs = [orjson.loads(f.read_bytes()) for f in files]
    measured = [run["units"] for run in runs if "units" in run]
    units = None
    if measured:
        units = {k: float(np.median([u[k] for u in measured])) for k in measured[0]
                 if isinstance(measured[0][k], int | float)}  # fmt: skip
        for name in ("api_cpu_us_per_event", "trainer_cpu_us_per_event"):
            runs_of = ", ".join(f"{u[name]:.0f} (load {u['load'][0]:.1f})" for u in measured)
            print(f"{name}: median {units[name]:.0f}; runs: {runs_of}")
    rows = sorted((r for run in runs for r in run.get("rounds", [])), key=lambda r: r["users"])
    report(units, rows)


if __name__ == "__main__":
    main()
