"""What logging candidates costs the event log, and what the dashboard's estimate costs.

    python benchmarks/bench_ope_log.py [--rankings 200] [--candidates 10 50] [--last 10000]
                                       [--sizes 20000 80000 320000] [--json]

1. Event-log bytes. A real redis-server, the API app (its rank route, in process through
   Flask's test client), the real trainer and its event log writer: ``--rankings`` rank calls
   of C candidates each (k = C, epsilon 0.1, a context), one click/skip event per shown item,
   then the written lines are measured: a slot-0 line (it carries the ranking's candidates),
   a later slot's line, and the whole log against the same lines without ``candidates``.
2. The dashboard task's cost. ``dashboard_estimate`` (what the beat task runs) on logs of
   ``--sizes`` top-slot lines (4 shards, 10,000 lines a day) with ``last = --last``, against
   reading the whole log (``last = None``): the bounded read should stay flat as the log grows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fedlearn.api import create_app, issue_token
from fedlearn.config import load_settings
from fedlearn.data.eventlog import read_log
from fedlearn.devtools import EmbeddedRedis
from fedlearn.evaluate.decisions import dashboard_estimate
from fedlearn.model import Base
from fedlearn.store import Store
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.eventlog import EventLogWriter
from fedlearn.trainer.trainer import Trainer

N_ITEMS, N_USERS, SHARDS, PER_DAY = 200, 50, 4, 10_000
DAYPARTS = ("morning", "noon", "evening", "night")


def log_bytes(candidates: int, rankings: int, folder: Path) -> dict[str, Any]:
    """Part 1 for rankings of ``candidates`` items: bytes per line and of the whole log."""
    rng = np.random.default_rng(candidates)
    with EmbeddedRedis(folder / "redis") as server, Store.from_url(server.url, SHARDS) as store:
        base = Base.fresh([f"item={i}" for i in range(N_ITEMS)], 8, version="1", init_scale=0.1)
        store.bases.put_base("1", base.to_bytes(), {"generation": 0})
        store.bases.set_current("1")
        settings = load_settings(redis_url=server.url, n_shards=SHARDS, data_dir=folder / "data",
                                 secret_key="bench-ope-log-secret-0123456789",
                                 rate_events_per_s=0, rate_rank_per_s=0)  # fmt: skip
        client = create_app(settings, store).test_client()
        admin = {"Authorization": f"Bearer {issue_token(settings, None, admin=True).token}"}
        events = []
        for n in range(rankings):
            user = f"u{n % N_USERS}"
            items = rng.choice(N_ITEMS, size=candidates, replace=False)
            body = {"items": [{"id": str(i)} for i in items], "k": candidates,
                    "context": {"daypart": DAYPARTS[n % 4], "device": "mobile"},
                    "policy": {"kind": "epsilon", "epsilon": 0.1}}  # fmt: skip
            answer = client.post(f"/v1/users/{user}/rank", json=body, headers=admin)
            assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
            ranked = answer.get_json()
            for slot, shown in enumerate(ranked["items"]):
                signal = "click" if rng.random() < 0.1 else "skip"
                events.append({"event_id": f"e{n}-{slot}", "user": user, "item": shown["id"],
                               "signal": signal, "ts": 1.7e9 + n,
                               "prediction_id": ranked["prediction_id"]})  # fmt: skip
        for start in range(0, len(events), 500):
            answer = client.post("/v1/events", json={"events": events[start:start + 500]},
                                 headers=admin)  # fmt: skip
            assert answer.status_code == 202, answer.get_data(as_text=True)[:300]
        log = folder / "eventlog"
        trainer = Trainer(store, lambda _: CloneSettings(lr=0.05, l2=0.0, bias_lr=0.05),
                          eventlog=EventLogWriter(store, log))  # fmt: skip
        trainer.ownership.maintain()
        while trainer.step() > 0:
            pass
        trainer.drain_eventlog()
        trainer.ownership.release_all()
    lines = list(read_log(log))
    assert len(lines) == len(events), (len(lines), len(events))
    sizes = [len(orjson.dumps(line)) for line in lines]
    without = [len(orjson.dumps({k: v for k, v in line.items() if k != "candidates"}))
               for line in lines]  # fmt: skip
    top = [s for s, line in zip(sizes, lines, strict=True) if line.get("slot") == 0]
    rest = [s for s, line in zip(sizes, lines, strict=True) if line.get("slot") != 0]
    assert all("candidates" in line for line in lines if line.get("slot") == 0)
    return {"candidates": candidates, "lines": len(lines), "slot0_line_bytes": float(np.mean(top)),
            "other_line_bytes": float(np.mean(rest)), "log_bytes": sum(sizes),
            "log_bytes_without_candidates": sum(without)}  # fmt: skip


def write_log(root: Path, n: int) -> None:
    """``n`` top-slot lines (the contract's fields, no features), 4 shards, PER_DAY a day."""
    rng = np.random.default_rng(n)
    for day_index, start in enumerate(range(0, n, PER_DAY)):
        day = time.strftime("%Y-%m-%d", time.gmtime(1.7e9 + 86_400 * day_index))
        count = min(PER_DAY, n - start)
        by_shard: dict[int, list[bytes]] = {}
        for i in range(start, start + count):
            greedy = rng.random() < 0.9
            line = {"event_id": f"e{i}", "user": f"u{i % 997}", "item": "1", "ts": 1.7e9 + i,
                    "signal": "click" if rng.random() < (0.2 if greedy else 0.1) else "skip",
                    "prediction_id": f"p{i}", "stream_id": f"{1_700_000_000_000 + i}-0",
                    "propensity": 0.92 if greedy else 0.01, "slot": 0,
                    "policy": {"kind": "epsilon", "epsilon": 0.1}}  # fmt: skip
            by_shard.setdefault(i % SHARDS, []).append(orjson.dumps(line))
        for shard, lines in by_shard.items():
            folder = root / f"shard={shard:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{day}.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def estimate_seconds(root: Path, last: int | None, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = dashboard_estimate(root, last=last, now=0.0)
        best = min(best, time.perf_counter() - started)
        assert result["error"] is None, result["error"]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rankings", type=int, default=200)
    parser.add_argument("--candidates", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--last", type=int, default=10_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 80_000, 320_000])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"log_bytes": [], "dashboard": []}
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.candidates:
            out["log_bytes"].append(log_bytes(c, args.rankings, Path(tmp) / f"c{c}"))
        for n in args.sizes:
            root = Path(tmp) / f"log{n}"
            write_log(root, n)
            out["dashboard"].append({"lines": n, "last": args.last,
                                     "bounded_s": estimate_seconds(root, args.last),
                                     "whole_log_s": estimate_seconds(root, None)})  # fmt: skip
    if args.json:
        print(orjson.dumps(out).decode())
        return
    print("1. event-log bytes (real API rank route, real trainer and writer)")
    print(f"{'candidates':>10} {'lines':>7} {'slot-0 line':>12} {'other line':>11} "
          f"{'log':>11} {'without cands':>14} {'growth':>7}")  # fmt: skip
    for r in out["log_bytes"]:
        growth = r["log_bytes"] / r["log_bytes_without_candidates"] - 1
        print(f"{r['candidates']:>10} {r['lines']:>7} {r['slot0_line_bytes']:>12.0f} "
              f"{r['other_line_bytes']:>11.0f} {r['log_bytes']:>11,} "
              f"{r['log_bytes_without_candidates']:>14,} {100 * growth:>6.0f}%")  # fmt: skip
    print(f"2. dashboard_estimate (the beat task's work), best of 3, last = {args.last:,}")
    print(f"{'log lines':>10} {'bounded (s)':>12} {'whole log (s)':>14}")
    for r in out["dashboard"]:
        print(f"{r['lines']:>10,} {r['bounded_s']:>12.3f} {r['whole_log_s']:>14.3f}")


if __name__ == "__main__":
    main()
