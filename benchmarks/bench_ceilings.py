"""The bare ceilings our figures are compared with, measured on the same machine in the same run.

    .venv/bin/python benchmarks/bench_ceilings.py [--seconds 10] [--connections 50]

- redis-py pipelined XADD: 50 events (orjson, as our streams hold them) per pipeline, one client;
- XREADGROUP (COUNT 1000) + XACK of what was read, one consumer: the floor of a trainer's I/O;
- bare HTTP ingest: ``bare_app.py`` (Flask + gunicorn, 2 sync workers) XADDing 50-event bodies
  in one pipeline, under ``http_load.py`` with N connections;
- bare HTTP GET of a 2 KB blob from Redis, same stack, one connection (latency).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import orjson
import redis
from procs import bare_api, load, print_on_fresh_redis

EVENT_BATCH = 50


def sample_events(n: int, prefix: str = "x") -> list[bytes]:
    """``n`` encoded events shaped like the ones the API appends."""
    ts = time.time()
    return [
        orjson.dumps(
            {
                "event_id": f"{prefix}-{i}",
                "user": f"u{i % 1000}",
                "item": f"i{i % 120}",
                "signal": "skip",
                "ts": ts,
                "context": {"hour": "21"},
                "received_at": ts,
            }
        )
        for i in range(n)
    ]


def redis_xadd(redis_url: str, n_events: int = 200_000) -> dict[str, Any]:
    """Events/s appended with pipelined XADD, ``EVENT_BATCH`` per round-trip."""
    client = redis.Redis.from_url(redis_url)
    events = sample_events(n_events)
    client.delete("ceiling:xadd")
    started = time.perf_counter()
    for start in range(0, n_events, EVENT_BATCH):
        pipe = client.pipeline(transaction=False)
        for event in events[start : start + EVENT_BATCH]:
            pipe.xadd("ceiling:xadd", {"e": event})
        pipe.execute()
    seconds = time.perf_counter() - started
    client.delete("ceiling:xadd")
    client.close()
    return {"events": n_events, "seconds": seconds, "events_per_s": n_events / seconds}


def redis_read_ack(redis_url: str, n_events: int = 200_000, count: int = 1000) -> dict[str, Any]:
    """Entries/s consumed with XREADGROUP COUNT ``count`` + one XACK of the ids read."""
    client = redis.Redis.from_url(redis_url)
    stream = "ceiling:read"
    client.delete(stream)
    events = sample_events(n_events)
    for start in range(0, n_events, 1000):
        pipe = client.pipeline(transaction=False)
        for event in events[start : start + 1000]:
            pipe.xadd(stream, {"e": event})
        pipe.execute()
    client.xgroup_create(stream, "g", id="0")
    done = 0
    started = time.perf_counter()
    while done < n_events:
        reply = client.xreadgroup("g", "c", {stream: ">"}, count=count)
        ids = [entry_id for entry_id, _fields in reply[0][1]]
        client.xack(stream, "g", *ids)
        done += len(ids)
    seconds = time.perf_counter() - started
    client.delete(stream)
    client.close()
    return {"events": done, "seconds": seconds, "events_per_s": done / seconds}


def bare_http(
    redis_url: str, folder: Path, *, connections: int, seconds: float, warmup_s: float = 2.0
) -> dict[str, Any]:
    """Bare ingest (N connections) and bare GET (one connection), same gunicorn stack."""
    users = [[f"u{i}", ""] for i in range(1000)]
    items = [f"i{i}" for i in range(120)]
    with bare_api(redis_url, folder / "bare.log") as url:
        ingest = load(
            {
                "mode": "ingest",
                "url": url,
                "path": "/ingest",
                "connections": connections,
                "warmup_s": warmup_s,
                "seconds": seconds,
                "batch": EVENT_BATCH,
                "users": users,
                "items": items,
                "prefix": "bare",
            },
            folder,
        )
        get = load(
            {
                "mode": "get",
                "url": url,
                "gets": [["/blob", ""]],
                "connections": 1,
                "warmup_s": warmup_s,
                "seconds": seconds,
            },
            folder,
        )
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match="bare:*"):
        client.delete(key)
    client.close()
    ingest["events_per_s"] = ingest["accepted"] / ingest["seconds"]
    return {"ingest": ingest, "get": get}


def measure(
    redis_url: str, folder: Path, *, connections: int, seconds: float, n_events: int
) -> dict[str, Any]:
    return {
        "xadd": redis_xadd(redis_url, n_events),
        "read_ack": redis_read_ack(redis_url, n_events),
        **bare_http(redis_url, folder, connections=connections, seconds=seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    print_on_fresh_redis(
        measure, connections=args.connections, seconds=args.seconds, n_events=args.events
    )


if __name__ == "__main__":
    main()
