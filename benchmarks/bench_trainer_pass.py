"""A trainer that keeps up: the cost of one pass over its shards when a few events wait.

    .venv/bin/python benchmarks/bench_trainer_pass.py [--events 30] [--passes 200]

A live trainer mostly keeps up: each pass (``Trainer.step``) finds a few events spread over
many of its shards (the shipped 64), reads them in one XREADGROUP and applies and commits
them. Its per-pass costs, not its per-event ones, then set how fresh a model is and how
much CPU the trainer takes from a busy machine. Here one in-process trainer owns every shard
of an embedded Redis with the benchmark's base and catalog (``bench_trainer.prefill``);
before each pass ``--events`` events of random users (most never seen: their records are
read) are appended, then one pass is timed: wall and CPU time, and Redis round trips
(sends of redis-py's connections: a pipeline or a script is one).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import bench_trainer
from roundtrips import counting_round_trips

from fedlearn.devtools import EmbeddedRedis
from fedlearn.store import Store
from fedlearn.trainer.trainer import Trainer, TrainerConfig, prepare_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30, help="events waiting at each pass")
    parser.add_argument("--passes", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(1)
    items = [f"i{i}" for i in range(bench_trainer.N_ITEMS)]
    walls, cpus, trips, shards_hit, applied = [], [], [], [], 0
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(Path(tmp) / "redis") as server,
        Store.from_url(server.url, bench_trainer.N_SHARDS) as store,
        counting_round_trips() as round_trips,
    ):
        bench_trainer.prefill(store, 0)
        trainer = Trainer(store, lambda _base: bench_trainer.CLONE, TrainerConfig())
        trainer.ownership.maintain()
        prepare_process()
        trainer.step()
        for p in range(args.passes):
            by_shard: dict[int, list[dict[str, object]]] = {}
            for i in range(args.events):
                user = f"u{rng.randrange(4 * bench_trainer.N_USERS)}"
                event = {"event_id": f"{p}-{i}", "user": user, "item": rng.choice(items),
                         "signal": "click", "received_at": time.time()}  # fmt: skip
                by_shard.setdefault(store.shard_of(user), []).append(event)
            for shard, events in by_shard.items():
                store.streams.append_events(shard, events)
            trainer.ownership.maintain()  # the heartbeat, outside the timed pass
            round_trips[0] = 0
            wall, cpu = time.perf_counter(), time.process_time()
            applied += trainer.step()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            trips.append(round_trips[0])
            shards_hit.append(len(by_shard))
    if applied != args.events * args.passes:
        raise SystemExit(f"applied {applied} of {args.events * args.passes} events")
    walls.sort()
    cpus.sort()
    n = len(walls)
    print(
        f"{args.events} events over {sum(shards_hit) / n:.1f} shards a pass, {n} passes: "
        f"wall p50 {walls[n // 2] * 1e3:.2f} ms, p99 {walls[int(0.99 * n)] * 1e3:.2f} ms; "
        f"CPU p50 {cpus[n // 2] * 1e3:.2f} ms ({cpus[n // 2] * 1e6 / args.events:.0f} us an "
        f"event); Redis round trips a pass {sum(trips) / n:.1f}"
    )


if __name__ == "__main__":
    main()
