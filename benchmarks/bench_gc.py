"""Garbage-collector pauses inside one trainer: CPython's default thresholds vs the trainer's.

    .venv/bin/python benchmarks/bench_gc.py [--events 100000] [--users 50000]

A pass of the collector stops the trainer, so every shard's batch waits for it: its longest
pause is a floor under the freshness tail. Each setting runs in a fresh process: the streams
are pre-filled as ``bench_trainer.py`` does (with ``--users`` users, so that many users' states
are cached when the trainer is done), one in-process trainer drains them with the event log on,
and ``gc.callbacks`` times every pass. Both settings start with ``prepare_process`` (kernel
loaded, start-up objects frozen); only the thresholds differ.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_trainer

from fedlearn.devtools import EmbeddedRedis
from fedlearn.store import Store
from fedlearn.trainer.trainer import GC_THRESHOLDS

SETTINGS = {"default": (700, 10, 10), "trainer": GC_THRESHOLDS}  # CPython 3.11's default


class Pauses:
    """Every collector pass's duration, by generation (a ``gc.callbacks`` hook)."""

    def __init__(self) -> None:
        self.seconds: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]].append(time.perf_counter() - self._started)

    def summary(self) -> dict[str, dict[int, float]]:
        """Passes, their total and their longest (ms), by generation."""
        return {
            "passes": {g: len(p) for g, p in self.seconds.items()},
            "total_ms": {g: 1000 * sum(p) for g, p in self.seconds.items()},
            "max_ms": {g: 1000 * max(p, default=0.0) for g, p in self.seconds.items()},
        }


def per_generation(r: dict[str, Any]) -> str:
    """One line of a :meth:`Pauses.summary` read back from JSON (generations as strings)."""
    return "; ".join(
        f"gen {g}: {r['passes'][g]} passes, {r['total_ms'][g]:,.0f} ms, "
        f"longest {r['max_ms'][g]:.1f} ms"
        for g in ("0", "1", "2")
    )


def one(setting: str, n_events: int, n_users: int) -> dict[str, Any]:
    bench_trainer.N_USERS = n_users
    pauses = Pauses()
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(Path(tmp) / "redis") as server,
        Store.from_url(server.url, bench_trainer.N_SHARDS, stream_maxlen=2 * n_events) as store,
    ):
        bench_trainer.prefill(store, n_events)
        gc.callbacks.append(pauses)
        result = bench_trainer.drain(
            store, n_events, eventlog=Path(tmp) / "eventlog", gc_thresholds=SETTINGS[setting]
        )
        gc.callbacks.remove(pauses)
    return {
        "setting": setting,
        "thresholds": SETTINGS[setting],
        "events_per_cpu_s": result["events_per_cpu_s"],
        **pauses.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--one", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.events, args.users)))
        return
    print(f"{args.events:,} events of {args.users:,} users, one trainer, event log on")
    for setting in SETTINGS:
        command = [sys.executable, __file__, "--one", setting, "--events", str(args.events),
                   "--users", str(args.users)]  # fmt: skip
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.splitlines()[-1])
        per_gen = per_generation(r)
        print(f"{setting} {tuple(r['thresholds'])}: {r['events_per_cpu_s']:,.0f} events per "
              f"trainer CPU-second; {per_gen}")  # fmt: skip


if __name__ == "__main__":
    main()
