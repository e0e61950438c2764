"""What many shards cost a trainer that is not busy: idle CPU and light-load freshness.

    .venv/bin/python benchmarks/bench_shards.py [--shards 8,64,1024] [--idle-s 10] [--probes 40]
        [--cluster]

For each shard count: a clean Redis with a base, one ``fedlearn worker`` process (as an
operator starts it) that owns every shard; then, once it owns them all, its CPU and Redis' CPU
over ``--idle-s`` seconds with no events (the per-shard chores: lease renewals, the pass that
reads each stream, trims), and ``--probes`` single events appended as the API appends them,
one every 0.1 s, each timed from its append until the user's stored delta counts it (what a
session waits for). The trainer-section figures of ``fedlearn bench`` give the busy side.
With ``--cluster``, the same on a local 3-master Redis Cluster (``devtools/cluster.py``),
where one XREADGROUP cannot span shards and an idle trainer polls them one by one.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import urllib3
from bench_scaleout import cpu_seconds
from procs import trainer
from prometheus_client.parser import text_string_to_metric_families
from redis.cluster import RedisCluster

from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.cluster import EmbeddedCluster
from fedlearn.model import Base
from fedlearn.store import Store

BASE = Base.fresh([f"item={i}" for i in range(200)], 10, version="bench-shards")


def redis_cpu(store: Store) -> float:
    """CPU seconds of Redis, summed over the nodes on a cluster (INFO answers per node)."""
    if not store.is_cluster:
        nodes = [store.client.info("cpu")]
    else:
        nodes = list(store.client.info("cpu", target_nodes=RedisCluster.PRIMARIES).values())
    return sum(float(n["used_cpu_user"]) + float(n["used_cpu_sys"]) for n in nodes)


def owned_shards(metrics_url: str) -> int:
    text = urllib3.request("GET", metrics_url, timeout=5.0).data.decode()
    for family in text_string_to_metric_families(text):
        if family.name == "fedlearn_trainer_owned_shards":
            return int(family.samples[0].value)
    return 0


def trainer_pid(log: Path) -> int:
    """The worker's pid, from its start line (``trainer <name>@<host>:<pid>:...``)."""
    match = re.search(r"trainer \S+?@[^:\s]+:(\d+):", log.read_text(errors="replace"))
    if match is None:
        raise RuntimeError(f"no start line in {log}")
    return int(match.group(1))


def probe(store: Store, user: str, event_id: str, timeout: float = 30.0) -> float:
    """Seconds from appending one event of ``user`` until their stored delta counts it."""
    shard = store.shard_of(user)
    before = record.events if (record := store.deltas.get(shard, user)) else 0
    event = {"event_id": event_id, "user": user, "item": "1", "signal": "click",
             "ts": time.time(), "received_at": time.time()}  # fmt: skip
    started = time.perf_counter()
    store.streams.append_events(shard, [event])
    while time.perf_counter() - started < timeout:
        record = store.deltas.get(shard, user)
        if record is not None and record.events > before:
            return time.perf_counter() - started
        time.sleep(0.002)
    raise RuntimeError(f"event {event_id} was not applied within {timeout:.0f} s")


def measure_one(url: str, folder: Path, n_shards: int, idle_s: float, probes: int) -> dict:
    with Store.from_url(url, n_shards) as store:
        store.client.flushall()
        store.bases.put_base(BASE.version, BASE.to_bytes(), {"generation": 0})
        store.bases.set_current(BASE.version)
        data = folder / f"shards-{n_shards}"
        data.mkdir(parents=True, exist_ok=True)
        with trainer(url, data, n_shards) as metrics_url:
            started = time.monotonic()
            while owned_shards(metrics_url) < n_shards:
                if time.monotonic() - started > 120:
                    raise RuntimeError(f"the trainer did not take all {n_shards} shards in 120 s")
                time.sleep(0.2)
            took_s = time.monotonic() - started
            pid = trainer_pid(data / "trainer.log")
            time.sleep(2.0)  # past the first passes
            cpu, rcpu, t0 = cpu_seconds(pid), redis_cpu(store), time.perf_counter()
            time.sleep(idle_s)
            wall = time.perf_counter() - t0
            idle_cpu, idle_redis = (cpu_seconds(pid) - cpu) / wall, (redis_cpu(store) - rcpu) / wall
            waits = []
            for i in range(probes):
                waits.append(probe(store, f"probe-{i % 97}", f"p{n_shards}-{i}"))
                time.sleep(0.1)
    arr = np.array(waits) * 1000
    return {
        "shards": n_shards,
        "take_all_s": took_s,
        "idle_trainer_cpu": idle_cpu,
        "idle_redis_cpu": idle_redis,
        "fresh_ms_p50": float(np.percentile(arr, 50)),
        "fresh_ms_p95": float(np.percentile(arr, 95)),
        "fresh_ms_max": float(arr.max()),
    }


def measure(url: str, folder: Path, shard_counts: list[int], idle_s: float, probes: int) -> list:
    return [measure_one(url, folder, n, idle_s, probes) for n in shard_counts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="8,64,1024")
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--cluster", action="store_true", help="a local 3-master Redis Cluster")
    args = parser.parse_args()
    counts = [int(part) for part in args.shards.split(",")]
    kind = EmbeddedCluster if args.cluster else EmbeddedRedis
    with tempfile.TemporaryDirectory() as tmp, kind(Path(tmp) / "redis") as server:
        rows = measure(server.url, Path(tmp), counts, args.idle_s, args.probes)
    for r in rows:
        print(
            f"{r['shards']:>5} shards, 1 trainer: took them all in {r['take_all_s']:.1f} s; "
            f"idle: trainer {100 * r['idle_trainer_cpu']:.1f} % of a core, Redis "
            f"{100 * r['idle_redis_cpu']:.1f} %; one event to the stored delta: p50 "
            f"{r['fresh_ms_p50']:.0f} ms, p95 {r['fresh_ms_p95']:.0f} ms, max "
            f"{r['fresh_ms_max']:.0f} ms"
        )
    print(orjson.dumps(rows).decode())


if __name__ == "__main__":
    main()
