"""The dashboard with 100,000 users: the data endpoint's time and size stay flat in the users.

Phase by phase, on one embedded Redis: users' events are applied by a real trainer (one event
each, so every user has a delta and a gate, and the trainer holds them all in memory), the
trainer publishes its snapshot, one aggregation round runs; then ``GET /v1/dashboard/data`` is
timed through the Flask test client. Done at 1,000 and then 100,000 users: the answer reads
O(shards + trainers + rounds) keys, so its time and size should not move. Also printed: what
the trainer's snapshot costs (it walks the users in memory to count the gates), and the
memory per user in the trainer and in Redis, for sizing.

    .venv/bin/python benchmarks/bench_dashboard.py --users 1000,100000
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.run import run_round_inline
from fedlearn.api import create_app, issue_token, routes_dashboard
from fedlearn.config import load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.model import Base
from fedlearn.store import Store, keys
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.trainer import Trainer, TrainerConfig

N_SHARDS = 16
N_ITEMS = 2000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def feed(store: Store, trainer: Trainer, first: int, last: int, rng: np.random.Generator) -> None:
    """One event for each user ``first .. last - 1``, applied by ``trainer``."""
    by_shard: dict[int, list[dict]] = {}
    for u in range(first, last):
        user = f"u{u}"
        by_shard.setdefault(store.shard_of(user), []).append(
            {
                "event_id": f"e{u}",
                "user": user,
                "item": str(int(rng.zipf(1.3)) % N_ITEMS),
                "signal": "click" if rng.random() < 0.3 else "skip",
                "ts": 1.7e9 + u,
                "context": {"hour": str(int(rng.integers(24)))},
            }
        )
    for shard, events in by_shard.items():
        for start in range(0, len(events), 5000):
            store.streams.append_events(shard, events[start : start + 5000])
    trainer.ownership.maintain()
    beat = time.monotonic()
    while trainer.step():
        if time.monotonic() - beat > 2.0:  # keep the leases, as Trainer.run does
            trainer.ownership.maintain()
            beat = time.monotonic()
    for shard in store.shards:  # what the trainer's trimming and event log writer do
        store.streams.trim_acked(shard)
        store.client.delete(keys.applied(shard))


def time_endpoint(client, headers: dict[str, str], n: int) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(n):
        started = time.perf_counter()
        response = client.get("/v1/dashboard/data", headers=headers)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        size = len(response.get_data())
    return times, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1000,100000", help="comma-separated, increasing")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(x) for x in args.users.split(",")]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# {N_SHARDS} shards, 1 trainer, k=10, one event per user")
    print(
        "| users | endpoint median (ms) | endpoint p95 (ms) | answer (bytes) | snapshot publish "
        "(ms) | users in memory | trainer RSS (MB) | Redis used (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        store = Store.from_url(server.url, N_SHARDS)
        base = Base.fresh([f"item={i}" for i in range(N_ITEMS)], 10, version="1")
        store.bases.put_base("1", base.to_bytes(), {"generation": 0})
        store.bases.set_current("1")
        settings = load_settings(
            redis_url=server.url, n_shards=N_SHARDS, secret_key="bench-secret-0123456789abcdef"
        )
        app = create_app(settings, store)
        app.register_blueprint(routes_dashboard.bp)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {issue_token(settings, admin=True).token}"}
        clone = CloneSettings(lr=0.1, l2=0.0, bias_lr=0.1)
        config = TrainerConfig(name="bench", batch_size=1000)
        trainer = Trainer(store, lambda _: clone, config)
        trainer.ownership.maintain()
        done = 0
        for n in sizes:
            feed(store, trainer, done, n, rng)
            done = n
            gc.collect()
            started = time.perf_counter()
            snapshot = trainer.telemetry.publish(trainer.telemetry_state())
            publish_ms = (time.perf_counter() - started) * 1000
            run_round_inline(store, AggregationConfig(min_users=2, min_row_users=2))
            times, size = time_endpoint(client, headers, args.requests)
            ms = sorted(t * 1000 for t in times)
            redis_mb = store.client.info("memory")["used_memory"] / 2**20
            print(
                f"| {n:,} | {statistics.median(ms):.2f} | {ms[int(0.95 * len(ms))]:.2f} "
                f"| {size:,} | {publish_ms:.1f} | {snapshot['users']['cached']:,} "
                f"| {rss_mb():.0f} | {redis_mb:.0f} |",
                flush=True,
            )
        store.close()


if __name__ == "__main__":
    main()
