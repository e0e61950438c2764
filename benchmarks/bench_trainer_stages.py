"""Where a trainer event's CPU goes, stage by stage: ``bench_trainer.py``'s run, timed inside.

    .venv/bin/python benchmarks/bench_trainer_stages.py [--events 200000] [--ranked 0.7]

The same pre-filled streams and in-process trainer as ``bench_trainer.py`` (event log off);
each stage's function is wrapped to add up this process's CPU time (``time.process_time``)
spent in it. CPU time rather than a sampling profiler: what is waited for (Redis answering)
is not counted, and the wrapping adds well under a microsecond per call (a stage is called
once per batch). ``--ranked`` makes that share of the events name a ranking, as
``bench_trainer.py``'s does. Printed: microseconds of trainer CPU per event for each stage,
and in all; then Redis's own CPU per event (``INFO cpu``), split by command (``INFO
commandstats``, reset after the prefill; a script's own commands are counted under their names
and again inside ``evalsha``), since work moved into a script costs the core Redis runs on.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_trainer

from fedlearn.devtools import EmbeddedRedis
from fedlearn.model.table import DeltaTable
from fedlearn.store import Store, streams
from fedlearn.trainer import catalog_cache, trainer

# (label, owner, attribute): the functions a batch passes through, in order.
STAGES = (
    ("claim (a previous owner's entries)", streams.Streams, "claim"),
    ("read: XREADGROUP + parse", streams.Streams, "read_many"),
    ("screen entries", trainer, "screen_events"),
    ("load users' deltas", trainer.Trainer, "_load_users"),
    ("prediction records", trainer.Trainer, "_prediction_records"),
    ("catalog features", catalog_cache.CatalogCache, "features"),
    ("apply_batch", trainer, "apply_batch"),
    ("serialize deltas", DeltaTable, "to_bytes_many"),
    ("encode the applied log", trainer, "render_applied"),
    ("commit: arguments + script", streams.Streams, "commit_batches"),
    ("metrics", trainer.Trainer, "_observe"),
)


REDIS_COMMANDS = 8  # the costliest ones printed


def timed(spent: dict[str, float]) -> None:
    """Wrap every stage's function to add its CPU seconds to ``spent[label]``."""
    for label, owner, name in STAGES:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def wrapper(*args: Any, _inner: Any = inner, _label: str = label, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return _inner(*args, **kwargs)
            finally:
                spent[_label] = spent.get(_label, 0.0) + time.process_time() - started

        setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--ranked", type=float, default=0.0, help="share of events naming a ranking (0..1)"
    )
    args = parser.parse_args()
    spent: dict[str, float] = {}
    timed(spent)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        url, n = server.url, args.events
        with Store.from_url(
            url, bench_trainer.N_SHARDS, stream_maxlen=max(100_000, 2 * n)
        ) as store:
            store.client.flushall()
            bench_trainer.prefill(store, n, ranked=args.ranked)
            store.client.config_resetstat()
            result = bench_trainer.drain(store, n)
            commands = store.client.info("commandstats")
    applied = result["events"]
    print(f"{result['events_per_cpu_s']:,.0f} events per trainer CPU-second; us of CPU per event:")
    for label, _, _ in STAGES:
        print(f"  {label:<36} {1e6 * spent.get(label, 0.0) / applied:5.1f}")
    print(f"  {'all (the trainer process)':<36} {1e6 * result['trainer_cpu_s'] / applied:5.1f}")
    print(f"Redis: {1e6 * result['redis_cpu_s'] / applied:.1f} us of CPU per event; by command:")
    for name, stats in sorted(commands.items(), key=lambda kv: -kv[1]["usec"])[:REDIS_COMMANDS]:
        print(f"  {name.removeprefix('cmdstat_'):<36} {stats['usec'] / applied:5.2f}")


if __name__ == "__main__":
    main()
