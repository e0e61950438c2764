"""Aggregation rounds at scale: 25k, 50k and 100k synthetic users on 8 shards, 2 Celery workers.

Each user's delta (20..50 rows, k = 10, ~1.5 KB) is written straight to Redis through the
store's commit script; then one round runs on two ``celery -A fedlearn.jobs.app worker``
processes (solo pool). Measured: the round's wall time (start task sent -> snapshots promoted),
the map and reduce times, which worker mapped which shard, the peak RSS of each worker process
during the round (sampled every 20 ms with psutil) and Redis's memory before and after.

    .venv/bin/python benchmarks/bench_round.py            # writes its section of BENCHMARKS.md
    .venv/bin/python benchmarks/bench_round.py --sizes 2000 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.mapper import map_shard
from fedlearn.aggregate.round import TERMINAL, RoundStatus
from fedlearn.aggregate.run import begin_round, create_round, fail_round, rounds_of
from fedlearn.aggregate.synthetic import publish, random_deltas, write_deltas
from fedlearn.config import load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.jobs.app import START_ROUND, make_celery
from fedlearn.model import Base
from fedlearn.store import Store

REPO = Path(__file__).resolve().parents[1]
HEADING = "## Aggregation rounds (issue 4)"
N_SHARDS = load_settings().n_shards  # the shipped default unless FEDLEARN_N_SHARDS says
K = 10
N_ITEMS = 20_000


class PeakRss(threading.Thread):
    """Samples the RSS of some processes until stopped; keeps each one's peak."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = {name: p.memory_info().rss for name, p in self.procs.items()}
        self.every_s = every_s
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            for name, proc in self.procs.items():
                self.peak[name] = max(self.peak[name], proc.memory_info().rss)

    def stop(self) -> dict[str, int]:
        self.done.set()
        self.join()
        return self.peak


def start_workers(
    url: str, data_dir: Path, log_dir: Path, extra_env: dict[str, str] | None = None
) -> dict[str, subprocess.Popen[bytes]]:
    env = {**os.environ, "REDIS_URL": url, "FEDLEARN_N_SHARDS": str(N_SHARDS),
           "FEDLEARN_DATA_DIR": str(data_dir), **(extra_env or {})}  # fmt: skip
    procs = {}
    for name in ("w1", "w2"):
        with (log_dir / f"{name}.log").open("wb") as out:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "fedlearn.jobs.app", "worker",
                 "--pool=solo", "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
                 "-l", "warning"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
    return procs


@contextlib.contextmanager
def celery_workers(
    url: str, data_dir: Path, log_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[dict[str, subprocess.Popen[bytes]], Any]]:
    """The two workers (``start_workers``), answering pings, and a Celery app to send them
    tasks; both workers are stopped on the way out."""
    workers = start_workers(url, data_dir, log_dir, extra_env)
    try:
        app = make_celery(load_settings(redis_url=url, n_shards=N_SHARDS))
        while len(app.control.ping(timeout=0.5) or []) < 2:
            pass
        yield workers, app
    finally:
        for proc in workers.values():
            proc.terminate()
        for proc in workers.values():
            proc.wait(60)


def one_size(
    store: Store, app: Any, workers: dict[str, subprocess.Popen[bytes]], n_users: int,
    strategy: str, seed: int, repeats: int,
) -> dict[str, Any]:  # fmt: skip
    for key in store.client.scan_iter(match="fl:*", count=5000):
        store.client.unlink(key)
    base = Base.fresh([f"item={i}" for i in range(N_ITEMS)], K, version="1")
    publish(store, base)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    for start in range(0, n_users, 10_000):  # in blocks: bounded memory while writing
        block = random_deltas(rng, min(10_000, n_users - start), n_factors=K, n_items=N_ITEMS,
                              prefix=f"u{start}-")  # fmt: skip
        write_deltas(store, block, base="1")
    write_s = time.perf_counter() - started
    redis_before = int(store.client.info("memory")["used_memory"])
    config = AggregationConfig(strategy=strategy, min_users=1, lock_ttl_s=3600)
    times, peaks, records = [], [], []
    for attempt in range(repeats):
        if attempt:  # the same work again: forget the snapshots, back to the first base
            for shard in range(N_SHARDS):
                rounds_of(store).clear_snapshots(shard)
            store.bases.set_current("1")
        round_id = create_round(rounds_of(store), config, trigger="bench")
        sampler = PeakRss({name: p.pid for name, p in workers.items()})
        sampler.start()
        t0 = time.perf_counter()
        app.send_task(START_ROUND, args=[round_id])
        while (record := rounds_of(store).get(round_id) or {})["status"] not in TERMINAL:
            time.sleep(0.05)
        times.append(time.perf_counter() - t0)
        peaks.append(sampler.stop())
        records.append(record)
        if record["status"] != RoundStatus.DONE:
            raise SystemExit(f"round {round_id} ended {record['status']}: {record.get('error')}")
    redis_after = int(store.client.info("memory")["used_memory"])
    inline_ms = map_alone(store, config)
    fastest = int(np.argmin(times))  # the least disturbed run: other jobs only ever add time
    seconds = times[fastest]
    peak = {name: max(p[name] for p in peaks) for name in workers}
    result = records[fastest]["result"]
    shards = result["shards"]
    return {
        "users": n_users,
        "strategy": strategy,
        "write_s": write_s,
        "round_s": seconds,
        "round_median": float(np.median(times)),
        "map_s": {s: note["seconds"] for s, note in shards.items()},
        "map_by": {s: note["worker"].split("@")[0] for s, note in shards.items()},
        "reduce_s": result["reduce_seconds"],
        "reducer": result["reducer"].split("@")[0],
        "rows": result["rows_updated"],
        "peak_rss_mb": {name: rss / 2**20 for name, rss in peak.items()},
        "redis_before_mb": redis_before / 2**20,
        "redis_after_mb": redis_after / 2**20,
        "contributors": result["users"],
        "load": os.getloadavg()[0],
        "inline_ms_per_user": inline_ms,
    }


def map_alone(store: Store, config: AggregationConfig) -> float:
    """ms per user of the map step of shard 0 in this process, with no worker running: the
    map's own cost, without the round's other steps or other processes in the way."""
    rounds = rounds_of(store)
    for shard in range(N_SHARDS):
        rounds.clear_snapshots(shard)
    round_id = create_round(rounds, config, trigger="bench-inline")
    begin_round(store, rounds, round_id)
    started = time.perf_counter()
    meta = map_shard(store, rounds, round_id, 0, worker="bench")
    seconds = time.perf_counter() - started
    fail_round(store, rounds, round_id, "benchmark: map step only")
    return 1000 * seconds / max(meta["users"], 1)


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| users | strategy | round (s): min / median | s per 1k users (min) "
        "| map: sum of shards (s) | reduce (s) "
        "| shards w1/w2 | peak RSS w1 / w2 (MB) | reducer | rows updated "
        "| Redis before -> after (MB) | load avg | one shard's map alone (ms/user) |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        by = list(r["map_by"].values())
        lines.append(
            f"| {r['users']:,} | {r['strategy']} | {r['round_s']:.1f} / "
            f"{r['round_median']:.1f} | "
            f"{1000 * r['round_s'] / r['users']:.3f} | {sum(r['map_s'].values()):.1f} | "
            f"{r['reduce_s']:.1f} | {by.count('w1')}/{by.count('w2')} | "
            f"{r['peak_rss_mb']['w1']:.0f} / {r['peak_rss_mb']['w2']:.0f} | {r['reducer']} | "
            f"{r['rows']:,} | {r['redis_before_mb']:.0f} -> {r['redis_after_mb']:.0f} | "
            f"{r['load']:.1f} | {r['inline_ms_per_user']:.3f} |"
        )
    return "\n".join(lines)


def growth(rows: list[dict[str, Any]]) -> str:
    """Per strategy: how the round time and the workers' memory grew from the smallest size to
    the largest, and how the map tasks were spread."""
    lines = ["Growth, smallest to largest size (linear growth would be the ratio of users):", ""]
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        mine = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["users"])
        first, last = mine[0], mine[-1]
        spread = sorted({tuple(sorted(r["map_by"].values()).count(w) for w in ("w1", "w2"))
                         for r in mine})  # fmt: skip
        lines.append(
            f"- {strategy}: users x{last['users'] / first['users']:.0f}, round time "
            f"x{last['round_s'] / first['round_s']:.1f}, map work (sum over shards) "
            f"x{sum(last['map_s'].values()) / sum(first['map_s'].values()):.1f}, reduce "
            f"x{last['reduce_s'] / max(first['reduce_s'], 1e-3):.1f}; peak worker RSS "
            f"{max(first['peak_rss_mb'].values()):.0f} -> {max(last['peak_rss_mb'].values()):.0f}"
            f" MB; map tasks per worker (w1, w2): {', '.join(map(str, spread))}"
        )
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) our section of BENCHMARKS.md, leaving the others as they are."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    section = f"{HEADING}\n\n{body.strip()}\n"
    if HEADING in text:
        start = text.index(HEADING)
        nxt = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + ("\n" + text[nxt + 1 :] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25000,50000,100000")
    parser.add_argument("--strategies", default="fedavg,trimmed_mean")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per size (median)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    strategies = args.strategies.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with (
            EmbeddedRedis(folder / "redis", appendfsync="no") as server,
            celery_workers(server.url, folder / "data", folder) as (workers, app),
        ):
            store = Store.from_url(server.url, N_SHARDS)
            # no background AOF rewrite (a fork of a 500 MB Redis) in the middle of a round
            store.client.config_set("auto-aof-rewrite-percentage", 0)
            for strategy in strategies:
                for n in sizes:
                    row = one_size(store, app, workers, n, strategy, n, args.repeats)
                    rows.append(row)
                    print(table([row]).splitlines()[-1], flush=True)
    out = table(rows)
    print(out)
    if args.no_write:
        return
    cpu = platform.processor() or platform.machine()
    command = (
        f".venv/bin/python benchmarks/bench_round.py --sizes {args.sizes} "
        f"--strategies {args.strategies} --repeats {args.repeats}"
    )
    machine = (
        f"{psutil.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GB "
        f"RAM, Python {platform.python_version()}, embedded redis-server 6.2 (AOF, fsync off) "
        f"on the same machine"
    )
    body = f"""Command: `{command}`

Machine: {machine}.
Setup: {N_SHARDS} shards, k = {K}, a base of {N_ITEMS:,} item rows; every user has a delta of
20..50 rows (items by popularity, 3 hours, its own user row: ~1.5 KB) and contributes (first
round). Two Celery worker processes (`--pool=solo`, one task at a time each); the round is the
Celery chord start -> 8 map tasks -> reduce -> promote, timed from sending the start task
until the snapshots are promoted; each size runs {args.repeats} times (snapshots cleared in
between, so each round does the same work); the fastest and the median are shown, the
fastest being the least disturbed by other jobs. "Peak RSS" is each
worker's resident memory sampled every 20 ms during the rounds (the reducer is one of them);
Redis memory grows by the users' snapshots, which the next round diffs against. "load avg"
is the machine's 1-minute load average after the size's rounds: above 4 (two workers, Redis
and this script on 2 cores), other jobs shared the machine and the times are inflated. The
last column is the map step of one shard run alone in the benchmark's process (no worker
busy): the map's own cost per user, which linear growth keeps flat.

{out}

{growth(rows)}
"""
    write_section(REPO / "BENCHMARKS.md", body)
    print(f"wrote the section '{HEADING}' of {REPO / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
