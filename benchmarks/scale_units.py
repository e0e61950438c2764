"""Unit costs for the capacity model (``bench_scale.py``), in CPU-seconds, not wall time.

The machine is shared, so wall time says how busy it was; CPU-seconds per unit of work (read
from ``/proc`` through psutil for our processes, ``INFO cpu`` for Redis) move far less. Two
phases on one embedded Redis, 8 shards, the ``bench_ingest`` catalog (120 items, 8 genres):

1. **Ingest**: ``python -m fedlearn api`` (gunicorn, 2 gthread workers) takes ``POST
   /v1/events`` batches from ``http_load.py`` while a ``fedlearn worker`` is up but idle (no
   base is current yet, so it applies nothing). Counted: events in the streams (XLEN), the
   API's CPU (master and workers), Redis' CPU, its memory and network bytes.
2. **Apply**: the base is made current; the trainer drains the streams. Counted: the
   trainer's CPU, Redis' CPU, and what each user's delta costs in Redis.

``base_costs`` times a base's encode / decode / store / load at a catalog's size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
from bench_ingest import N_ITEMS, VERSION, tokens
from bench_ingest import publish as publish_catalog
from bench_scaleout import drained, spread
from bench_trainer import delta_memory
from procs import load, our_api, trainer

from fedlearn.model import Base
from fedlearn.store import Store, keys

N_SHARDS = 8
K = 10


def redis_figures(store: Store) -> dict[str, float]:
    """Redis' CPU-seconds, memory and network bytes so far (``INFO``)."""
    info = store.client.info()
    return {
        "cpu_s": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        "memory": float(info["used_memory"]),
        "net_in": float(info["total_net_input_bytes"]),
        "net_out": float(info["total_net_output_bytes"]),
    }


def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def tree_cpu(pid: int) -> float:
    """User + system CPU-seconds of a process and its living children (gunicorn's workers)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def child_pid(marker: str) -> int:
    """The pid of this process' child whose command line holds ``marker``."""
    for child in psutil.Process().children():
        if marker in child.cmdline():
            return child.pid
    raise LookupError(f"no child process runs {marker!r}")


@contextmanager
def cpu_of(pid: int) -> Iterator[dict[str, float]]:
    """Yields a dict that holds the process tree's CPU-seconds spent inside the block."""
    spent: dict[str, float] = {}
    start = tree_cpu(pid)
    yield spent
    spent["cpu_s"] = tree_cpu(pid) - start


def stream_length(store: Store) -> int:
    return sum(int(store.client.xlen(keys.stream(s))) for s in store.shards)


def dedupe_bytes(store: Store) -> int:
    """``MEMORY USAGE`` of the shards' sets of event ids seen in this dedupe window."""
    window = int(time.time() // store.streams.dedupe_window_s)
    return sum(
        int(store.client.memory_usage(keys.seen(s, w), samples=0) or 0)
        for s in store.shards
        for w in (window, window - 1)
    )


def ingest_and_apply(
    redis_url: str, folder: Path, *, n_users: int, requests: int, batch: int
) -> dict[str, Any]:
    """The two phases above; returns the per-event and per-user figures."""
    users = tokens([f"scale-u{i}" for i in range(n_users)])
    items = [f"i{i}" for i in range(N_ITEMS)]
    spec = {"mode": "ingest", "path": "/v1/events", "connections": 16, "warmup_s": 0.0,
            "seconds": 600.0, "max_requests": requests, "batch": batch, "users": users,
            "items": items, "prefix": "scale"}  # fmt: skip
    with Store.from_url(redis_url, N_SHARDS) as store:
        store.client.flushall()
        publish_catalog(store, current=False)
        with (
            our_api(redis_url, folder / "api", N_SHARDS) as url,
            trainer(redis_url, folder / "api", N_SHARDS),
        ):
            while not spread(store, 1):
                time.sleep(0.1)
            api_pid, trainer_pid = child_pid("api"), child_pid("worker")
            redis0 = redis_figures(store)
            with cpu_of(api_pid) as api:
                answer = load({**spec, "url": url}, folder)
            redis1 = redis_figures(store)
            events, dedupe = stream_length(store), dedupe_bytes(store)
            with cpu_of(trainer_pid) as train:
                store.bases.set_current(VERSION)
                while not drained(store.telemetry):
                    time.sleep(0.05)
            redis2 = redis_figures(store)
            memory = delta_memory(store)
            blobs = [
                len(r.delta)
                for s in store.shards
                for r in store.deltas.get_many(s, list(store.deltas.users(s))).values()
            ]
        store.client.flushall()
    ingest, apply = since(redis0, redis1), since(redis1, redis2)
    # what a client sends per event: the JSON body as http_load.py builds it, and the
    # request line and headers (the bearer token) shared by the batch
    sample = {"event_id": "scale-123456-7", "user": users[-1][0], "item": items[-1],
              "signal": "skip", "ts": time.time(), "context": {"hour": "21"}}  # fmt: skip
    body = len(orjson.dumps({"events": [sample] * batch}))
    head = len(f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:65535\r\nAuthorization: Bearer "
               f"{users[-1][1]}\r\nContent-Type: application/json\r\nContent-Length: {body}"
               f"\r\n\r\n")  # fmt: skip
    return {
        "users": n_users,
        "batch": batch,
        "events": events,
        "status": answer.get("statuses"),
        "api_cpu_us_per_event": 1e6 * api["cpu_s"] / events,
        "api_cpu_us_per_request": 1e6 * api["cpu_s"] / (events / batch),
        "redis_ingest_cpu_us_per_event": 1e6 * ingest["cpu_s"] / events,
        "stream_bytes_per_event": (ingest["memory"] - dedupe) / events,
        "dedupe_bytes_per_event": dedupe / events,
        "net_in_bytes_per_event": ingest["net_in"] / events,
        "body_bytes_per_event": (body + head) / batch,
        "trainer_cpu_us_per_event": 1e6 * train["cpu_s"] / events,
        "redis_apply_cpu_us_per_event": 1e6 * apply["cpu_s"] / events,
        "net_apply_bytes_per_event": (apply["net_in"] + apply["net_out"]) / events,
        "delta_redis_bytes_per_user": memory["bytes_mean"],
        "delta_blob_bytes_per_user": float(np.mean(blobs)),
        "events_per_user": memory["events_mean"],
    }


def base_costs(n_items: int, store: Store) -> dict[str, Any]:
    """A fresh base of ``n_items`` item rows (k = 10): its bytes, and the CPU-seconds to
    encode and decode (best of 3, process time), and the wall time to store it as a version
    and read it back from Redis (the reader's CPU is most of that)."""
    base = Base.fresh([f"item={i}" for i in range(n_items)], K, version="scale-base")

    def timed(step: Any) -> tuple[float, Any]:
        best, out = float("inf"), None
        for _ in range(3):
            started = time.process_time()
            out = step()
            best = min(best, time.process_time() - started)
        return best, out

    encode_s, blob = timed(base.to_bytes)
    decode_s, _ = timed(lambda: Base.from_bytes(blob))
    started = time.perf_counter()  # once: a version is written once
    store.bases.put_base(base.version, blob, {})
    put_s = time.perf_counter() - started
    get_s, _ = timed(lambda: store.bases.get_base(base.version))
    return {"items": n_items, "bytes": len(blob), "encode_s": encode_s, "decode_s": decode_s,
            "redis_set_s": put_s, "redis_get_s": get_s}  # fmt: skip
