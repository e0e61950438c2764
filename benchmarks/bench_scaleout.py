"""Trainer scale-out: events/s of N ``fedlearn worker`` processes draining pre-filled shards.

For each N: a clean Redis, 4 x N shards (or ``--shards``, the same for every N) pre-filled
with ``bench_trainer.py``'s events (about the same number in each shard), N trainer processes
started (as an operator starts them) while no base is published, so they share the shards out
first without training; then the base is published and the clock runs from the first applied
event until every shard's stream is fully read and acknowledged. CPU seconds of each trainer
and of Redis over the same time are read from /proc and INFO, which says where the machine's
cores went. Each trainer fsyncs its event log every second: on a slow disk that wait, not the
CPU, bounds one trainer; ``--data-dir /dev/shm/x`` shows the CPU-bound figure.

    .venv/bin/python benchmarks/bench_scaleout.py --trainers 1,2,4 --events-per-shard 10000
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import bench_trainer
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port
from fedlearn.store import Store
from fedlearn.store.telemetry import Telemetry

SHARDS_PER_TRAINER = 4
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def redis_cpu(store: Store) -> float:
    info = store.client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def applied(port: int) -> float:
    """Events a trainer applied so far, from its own /metrics."""
    text = urllib3.request("GET", f"http://127.0.0.1:{port}/metrics", timeout=5.0).data.decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "fedlearn_events_applied_total"
    )


def drained(telemetry: Telemetry) -> bool:
    return all(s.pending == 0 and s.lag_seconds == 0 for s in telemetry.shard_stats())


def spread(store: Store, n: int) -> bool:
    holders = Counter(store.leases.holder(s) for s in store.shards)
    return None not in holders and len(holders) == n


def run_once(
    url: str, n: int, per_shard: int, folder: Path, data: Path, *, n_shards: int | None = None
) -> dict[str, float]:
    """``n`` trainer processes draining ``n_shards`` (default ``4 n``) pre-filled shards."""
    n_shards = n_shards or SHARDS_PER_TRAINER * n
    store = Store.from_url(url, n_shards, stream_maxlen=max(100_000, 2 * per_shard))
    store.client.flushall()
    telemetry = store.telemetry
    # bench_trainer.py's events (its catalog, its base), so that the events per trainer
    # CPU-second of a ``fedlearn worker`` process compare with the in-process trainer's.
    base = bench_trainer.prefill(store, per_shard * n_shards, seed=n, publish=False)
    total = sum(map(store.streams.length, store.shards))
    env = {
        **os.environ,
        "REDIS_URL": url,
        "FEDLEARN_N_SHARDS": str(n_shards),
        "FEDLEARN_DATA_DIR": str(data / f"data-{n}"),  # the trainers' event log goes here
        "FEDLEARN_STREAM_MAXLEN": str(max(100_000, 2 * per_shard)),
        "FEDLEARN_AUTH": "off",
    }
    env.pop("FEDLEARN_REDIS_URL", None)
    procs, ports = [], [free_port() for _ in range(n)]
    for i in range(n):
        log = (folder / f"trainer-{n}-{i}.log").open("wb")
        argv = [sys.executable, "-m", "fedlearn", "worker", "--name", f"t{i}"]
        argv += ["--metrics-port", str(ports[i])]
        procs.append(
            subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not spread(store, n):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} trainers did not share the shards out within 120 s")
            time.sleep(0.1)
        store.bases.put_base(base.version, base.to_bytes(), {"generation": 0})
        store.bases.set_current(base.version)
        # Each trainer notices the base within a second, not all at once: the clock starts
        # when every one of them is applying, and counts only what they apply from then on.
        # So does the CPU: a /metrics scrape costs a trainer ~3 ms of CPU, and polling every
        # 5 ms until it applies (up to a second) was up to a tenth of the trainer CPU counted.
        while min(applied(p) for p in ports) == 0:
            time.sleep(0.005)
        started = time.perf_counter()
        at_start = sum(applied(p) for p in ports)
        cpu_before = [cpu_seconds(p.pid) for p in procs]
        redis_before = redis_cpu(store)
        while not drained(telemetry):
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        trainer_cpu = sum(cpu_seconds(p.pid) - b for p, b in zip(procs, cpu_before, strict=True))
        redis_used = redis_cpu(store) - redis_before
        counted = sum(applied(p) for p in ports) - at_start  # after the CPU: it scrapes
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
        store.close()
    return {
        "trainers": n,
        "shards": n_shards,
        "events": total,
        "counted": counted,
        "seconds": seconds,
        "events_per_s": counted / seconds,
        "trainer_cpu_s": trainer_cpu,
        "events_per_trainer_cpu_s": counted / trainer_cpu if trainer_cpu else float("nan"),
        "redis_cpu_s": redis_used,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainers", default="1,2,4", help="comma-separated trainer counts")
    parser.add_argument("--events-per-shard", type=int, default=10_000)
    parser.add_argument(
        "--shards", type=int, default=None,
        help="the same shards for every trainer count (default: 4 per trainer)",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help="where the trainers write the event log (default: a temporary folder on disk; "
        "a tmpfs such as /dev/shm takes the disk's fsync out of the figure)",
    )  # fmt: skip
    args = parser.parse_args()
    counts = [int(x) for x in args.trainers.split(",")]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        "| trainers | shards | events | timed events | time (s) | events/s | trainer CPU (s) "
        "| events per trainer CPU-s | Redis CPU (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        for n in counts:
            data = args.data_dir or Path(tmp)
            r = run_once(
                server.url, n, args.events_per_shard, Path(tmp), data, n_shards=args.shards
            )
            print(
                f"| {r['trainers']} | {r['shards']} | {r['events']:,} | {r['counted']:,.0f} "
                f"| {r['seconds']:.1f} "
                f"| {r['events_per_s']:,.0f} | {r['trainer_cpu_s']:.1f} "
                f"| {r['events_per_trainer_cpu_s']:,.0f} | {r['redis_cpu_s']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
