"""What several events per stream entry would save a trainer's read (issue 12, not built).

    .venv/bin/python benchmarks/bench_entries.py [--events 20000] [--per-entry 1 5] [--rounds 2]

The same ``--events`` events (one typical event: ids, signal, timestamps, a two-field
context) are written to a stream as one event per entry (today's format) and as N events per
entry (one JSON array), then read back by a consumer group 1,000 events at a time and decoded
with orjson, as the trainer reads. Printed: this process's CPU time per event for each layout,
in interleaved rounds. Both layouts go through the same redis-py calls, so the difference is
what the per-entry part costs (the entry id, the field, one reply element and one decode call
per entry); acknowledging and the commit's per-entry arguments would shrink too, not measured.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson
import redis

from fedlearn.devtools import EmbeddedRedis

EVENT = {
    "event_id": "e1234567", "user": "u1234", "item": "i987", "signal": "click",
    "ts": 1733600000.123, "context": {"hour": "21", "device": "web"},
    "received_at": 1733600000.5,
}  # fmt: skip


def fill(client: redis.Redis, key: str, n_events: int, per_entry: int) -> None:
    payload = orjson.dumps(EVENT if per_entry == 1 else [EVENT] * per_entry)
    pipe = client.pipeline(transaction=False)
    for _ in range(n_events // per_entry):
        pipe.xadd(key, {b"e": payload})
    pipe.execute()
    client.xgroup_create(key, "g", id="0")


def read_all(client: redis.Redis, key: str, per_entry: int) -> tuple[int, float]:
    """Events read and decoded from the start of ``key``, and the CPU seconds it took."""
    client.xgroup_setid(key, "g", id="0")
    cpu, events = time.process_time(), 0
    while reply := client.xreadgroup("g", "c", {key: ">"}, count=1000 // per_entry):
        for _id, fields in reply[0][1]:
            decoded = orjson.loads(fields[b"e"])
            events += 1 if per_entry == 1 else len(decoded)
    return events, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--per-entry", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        client = redis.Redis.from_url(server.url)
        for per in args.per_entry:
            fill(client, f"s{per}", args.events, per)
        for _ in range(args.rounds):
            for per in args.per_entry:
                events, cpu = read_all(client, f"s{per}", per)
                each = 1e6 * cpu / events
                print(f"{per} event(s) per entry: {events:,} events, {each:.2f} us CPU each")


if __name__ == "__main__":
    main()
