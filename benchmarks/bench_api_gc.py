"""Garbage-collector pauses inside one API worker: start-up objects frozen or not.

    .venv/bin/python benchmarks/bench_api_gc.py [--requests 6000]

A pass of the collector holds the GIL, so every request in flight in that gunicorn worker
waits for it: the longest pause is a floor under the API's latency tail, and so under the
freshness tail (a POST and at least one GET). Each setting runs in a fresh process: the app
a gunicorn worker builds (``create_app``) over a real embedded redis-server with a small base
and catalog, then a mix of the hot routes through Flask's test client (the model GET, event
batches, rankings of 50 candidates, for 2,000 users), with ``gc.callbacks`` timing every
pass. "as loaded" is how ``fedlearn api`` workers run; "frozen" adds ``gc.freeze()`` after
the app is built (as the trainer does), the alternative this measures. Neither made a full
pass within 8,000 requests (young passes stay under a few ms), so the workers were left as
they are (BENCHMARKS.md, "Freshness at 1 % and 50 % of saturation").
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_gc import Pauses, per_generation

from fedlearn.api.app import create_app
from fedlearn.config import load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.model import Base
from fedlearn.store import Store
from fedlearn.store.items import Catalog
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.trainer import Trainer, TrainerConfig

N_SHARDS = 8
N_ITEMS = 500
N_USERS = 2000
SETTINGS = ("as-loaded", "frozen")


def _service(tmp: Path, url: str, **overrides: Any) -> tuple[Any, Store]:
    fields = {"auth": False, "n_shards": N_SHARDS, "data_dir": tmp / "data", **overrides}
    settings = load_settings(redis_url=url, **fields)
    store = Store.from_url(url, N_SHARDS)
    genres = [f"genre=g{g}" for g in range(20)]
    base = Base.fresh([f"item=i{i}" for i in range(N_ITEMS)] + genres, 8, version="bench-1")
    store.bases.put_base(base.version, base.to_bytes(), {"generation": 0})
    store.bases.set_current(base.version)
    Catalog(store.client).put_items(
        {f"i{i}": {"title": f"film {i}", "features": {genres[i % 20]: 1.0}} for i in range(N_ITEMS)}
    )
    return settings, store


def _train(store: Store, settings: Any) -> None:
    """Apply what was sent, so the model GETs serve real deltas (not only empty ones)."""
    trainer = Trainer(
        store,
        lambda b: CloneSettings(**settings.clone_hyper(b.hyper)),
        TrainerConfig(name="bench", batch_size=1000),
    )
    while True:  # the leases taken and renewed (a step reads only the shards it owns)
        trainer.ownership.maintain()
        if not trainer.step():
            break


def one(setting: str, n_requests: int) -> dict[str, Any]:
    rng = random.Random(7)
    pauses = Pauses()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        settings, store = _service(Path(tmp), server.url)
        client = create_app(settings, store).test_client()
        if setting == "frozen":
            gc.collect()
            gc.freeze()
        ids = iter(range(10**9))

        def request() -> None:
            user = f"u{rng.randrange(N_USERS)}"
            kind = rng.choices(("model", "events", "rank"), weights=(4, 8, 4))[0]
            if kind == "model":
                answer = client.get(f"/v1/users/{user}/model")
            elif kind == "events":
                events = [
                    {"event_id": f"e{next(ids)}", "user": user, "ts": time.time(),
                     "item": f"i{rng.randrange(N_ITEMS)}", "signal": rng.choice(("click", "skip")),
                     "context": {"hour": "21"}}
                    for _ in range(10)
                ]  # fmt: skip
                answer = client.post("/v1/events", json={"events": events})
            else:
                items = [{"id": f"i{i}"} for i in rng.sample(range(N_ITEMS), 50)]
                answer = client.post(f"/v1/users/{user}/rank", json={"items": items, "k": 10})
            if answer.status_code not in (200, 202):
                raise RuntimeError(f"{kind} answered {answer.status_code}: {answer.text[:200]}")

        for _ in range(n_requests // 4):  # warm up, then give the users deltas to serve
            request()
        _train(store, settings)
        gc.callbacks.append(pauses)
        times = []
        cpu = time.process_time()
        for _ in range(n_requests):
            started = time.perf_counter()
            request()
            times.append(time.perf_counter() - started)
        cpu = time.process_time() - cpu
        gc.callbacks.remove(pauses)
        store.close()
    times.sort()
    return {
        "setting": setting,
        "requests": n_requests,
        "cpu_ms_per_request": 1000 * cpu / n_requests,
        "p50_ms": 1000 * times[len(times) // 2],
        "p99_ms": 1000 * times[int(0.99 * (len(times) - 1))],
        "request_max_ms": 1000 * times[-1],
        **pauses.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--one", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.requests)))
        return
    print(f"{args.requests:,} requests (model 4 : events 8 : rank 4), one in-process API")
    for setting in SETTINGS:
        command = [sys.executable, __file__, "--one", setting, "--requests", str(args.requests)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.splitlines()[-1])
        per_gen = per_generation(r)
        times = f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} / {r['request_max_ms']:.1f} ms"
        print(f"{setting}: {r['cpu_ms_per_request']:.2f} ms CPU per request, request p50 / p99 / "
              f"max {times}; {per_gen}")  # fmt: skip


if __name__ == "__main__":
    main()
