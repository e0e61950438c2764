"""The benchmark suite behind ``fedlearn bench``: every figure of BENCHMARKS.md in one table.

Sections (``--only`` picks some), run one after the other on one embedded redis-server:

- ``ceilings``: the bare stack on this machine, now (``bench_ceilings.py``);
- ``http``: our API's ingest, model fetch and freshness under load (``bench_ingest.py``);
- ``trainer``: one trainer end to end, and the bytes per user in Redis (``bench_trainer.py``);
  1 and 2 trainer processes on the same shards (``bench_scaleout.py``); the compiled
  update's cold start (``bench_coldstart.py``);
- ``update``: our batched update against River's ``learn_one`` (``bench_update.py``);
- ``round``: aggregation round time against the number of users (``bench_round.py``).

Our figures are shown beside their ceilings as a ratio, so a slower or busier machine moves
both. Sizes are bounded (:class:`Sizes`); :meth:`Sizes.quick` makes a smoke run of seconds
whose figures mean nothing.
"""

from __future__ import annotations

import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedlearn.config import load_settings
from fedlearn.devtools import EmbeddedRedis

SECTIONS = ("ceilings", "http", "trainer", "update", "round")
N_SHARDS = load_settings().n_shards  # the shipped default unless FEDLEARN_N_SHARDS says


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does (every one is bounded in requests and time)."""

    seconds: float = 10.0  # each HTTP measurement
    warmup_s: float = 2.0
    connections: int = 50
    ceiling_events: int = 200_000
    trainer_events: int = 200_000
    trainer_batch: int = 1000
    update_stream: str = "auto"  # "auto": MovieLens if present, else synthetic; "tiny"
    update_batch: int = 1000
    river_events: int = 20_000
    round_users: tuple[int, ...] = (10_000, 50_000)
    fetch_users: int = 200
    fetch_events: int = 30
    fresh_rate: float = 5000.0  # events/s of background ingest while freshness is probed
    probe_every: float = 0.1
    repeat: int = 3  # timed passes of the update and of each round (bench_update, bench_round)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            seconds=0.5,
            warmup_s=0.2,
            connections=4,
            ceiling_events=2000,
            trainer_events=2000,
            trainer_batch=500,
            update_stream="tiny",
            update_batch=100,
            river_events=300,
            round_users=(100,),
            fetch_users=10,
            fetch_events=5,
            fresh_rate=500.0,
            probe_every=0.05,
            repeat=1,
        )


@dataclass
class Row:
    key: str
    figure: str
    ours: str
    reference: str = "-"
    ratio: str = "-"
    aim: str = "-"


@dataclass
class Suite:
    sizes: Sizes
    sections: Sequence[str] = SECTIONS
    progress: Callable[[str], None] = print
    raw: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def run(self, folder: Path) -> dict[str, Any]:
        unknown = set(self.sections) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
        started = time.time()
        self.raw["machine"] = machine()
        with EmbeddedRedis(folder / "redis") as server:
            for name in SECTIONS:
                if name not in self.sections:
                    continue
                self.progress(f"bench: {name} ...")
                t0 = time.perf_counter()
                try:
                    self.raw[name] = getattr(self, f"_{name}")(server.url, folder)
                # One broken section must not hide the others (bench_round raises SystemExit).
                except (Exception, SystemExit) as exc:
                    self.errors[name] = f"{type(exc).__name__}: {exc}"
                    self.progress(traceback.format_exc())
                self.progress(f"bench: {name} done in {time.perf_counter() - t0:.0f} s")
        self.raw["sizes"] = asdict(self.sizes)
        self.raw["seconds"] = time.time() - started
        self.raw["machine"]["load_after"] = os.getloadavg()
        return self.raw

    # --- sections ------------------------------------------------------------------------

    def _ceilings(self, url: str, folder: Path) -> dict[str, Any]:
        import bench_ceilings

        s = self.sizes
        return {
            "xadd": bench_ceilings.redis_xadd(url, s.ceiling_events),
            "read_ack": bench_ceilings.redis_read_ack(url, s.ceiling_events),
            **bench_ceilings.bare_http(
                url, folder, connections=s.connections, seconds=s.seconds, warmup_s=s.warmup_s
            ),
        }

    def _http(self, url: str, folder: Path) -> dict[str, Any]:
        import bench_ingest

        s = self.sizes
        return bench_ingest.measure(
            url,
            folder,
            connections=s.connections,
            seconds=s.seconds,
            warmup_s=s.warmup_s,
            fetch_users=s.fetch_users,
            fetch_events=s.fetch_events,
            fresh_rate=s.fresh_rate,
            probe_every=s.probe_every,
        )

    def _trainer(self, url: str, folder: Path) -> dict[str, Any]:
        import bench_coldstart
        import bench_scaleout
        import bench_trainer

        result = bench_trainer.measure(
            url, self.sizes.trainer_events, batch=self.sizes.trainer_batch,
            eventlog=folder / "eventlog",
        )  # fmt: skip
        # 1 and 2 ``fedlearn worker`` processes on the same shards: does a second one add?
        per_shard = max(100, self.sizes.trainer_events // N_SHARDS)
        result["processes"] = [
            bench_scaleout.run_once(url, n, per_shard, folder, folder, n_shards=N_SHARDS)
            for n in (1, 2)
        ]
        result["cold_start"] = bench_coldstart.measure()
        return result

    def _update(self, url: str, folder: Path) -> dict[str, Any]:
        import bench_update

        s = self.sizes
        if s.update_stream == "tiny":
            source, events = tiny_stream()
        elif (bench_update.MOVIELENS / "ratings.csv").is_file():
            source, events = bench_update.movielens_stream()
        else:
            source, events = bench_update.synthetic_stream()
        half = len(events) // 2
        train, live = events[:half], events[half:]
        return {
            "stream": source,
            "repeat": s.repeat,
            "ours": bench_update.ours(train, live, batch=s.update_batch, repeat=s.repeat),
            "river": bench_update.river(train, live, n_events=s.river_events, repeat=s.repeat),
        }

    def _round(self, url: str, folder: Path) -> dict[str, Any]:
        import bench_round

        from fedlearn.config import load_settings
        from fedlearn.jobs.app import make_celery
        from fedlearn.store import Store

        (folder / "round").mkdir(exist_ok=True)
        workers = bench_round.start_workers(url, folder / "round", folder / "round")
        app = make_celery(load_settings(redis_url=url, n_shards=bench_round.N_SHARDS))
        rows = []
        try:
            deadline = time.monotonic() + 120
            while len(app.control.ping(timeout=0.5) or []) < len(workers):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Celery workers did not answer a ping within 120 s")
            with Store.from_url(url, bench_round.N_SHARDS) as store:
                for n in self.sizes.round_users:
                    rows.append(
                        bench_round.one_size(
                            store, app, workers, n, "fedavg", seed=n, repeats=self.sizes.repeat
                        )
                    )
                store.client.flushall()
        finally:
            for proc in workers.values():
                proc.terminate()
            for proc in workers.values():
                proc.wait(60)
        return {"rounds": rows}


def tiny_stream() -> tuple[str, list[tuple[str, dict[str, float], int]]]:
    """A 1,000-event synthetic stream for smoke runs."""
    import bench_update

    return bench_update.synthetic_stream(
        n_users=50, n_items=40, events_per_user=20,
        source="synthetic, tiny (50 users, 1,000 events)",
    )  # fmt: skip


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "load_before": os.getloadavg(),
    }
