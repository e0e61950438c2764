"""The applied log's lines: built from records, or appended to each event's own JSON text.

    .venv/bin/python benchmarks/bench_applied_log.py [--events 1000] [--rounds 3]

``data.eventlog.render_applied`` on one batch of typical events (ids, signal, timestamps, an
hour context, five features, two predictions), without and with the ``raw`` column the trainer
now passes (each event's text as read from its stream). Both give the same bytes (checked
here); printed is this process's CPU time per event for each, in interleaved rounds.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import orjson

from fedlearn.data.eventlog import render_applied


def batch_of(n: int) -> dict[str, Any]:
    rng = random.Random(1)
    events = [
        {
            "event_id": f"e{i}", "user": f"u{rng.randrange(5000)}",
            "item": str(rng.randrange(2000)), "signal": "click", "ts": 1.7e9 + i,
            "context": {"hour": str(rng.randrange(24))}, "received_at": 1.7e9,
        }
        for i in range(n)
    ]  # fmt: skip
    features = [
        {f"user={e['user']}": 1.0, f"item={e['item']}": 1.0, "genre=a": 1.0, "genre=b": 1.0,
         f"hour={e['context']['hour']}": 1.0}
        for e in events
    ]  # fmt: skip
    return {
        "events": events, "stream_id": [f"{i}-0" for i in range(n)], "features": features,
        "features_from": ["event"] * n, "shown": [{}] * n,
        "prediction": [rng.random() for _ in range(n)],
        "base_prediction": [rng.random() for _ in range(n)],
        "base_version": "b1", "applied_at": 1.7e9,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    records = batch_of(args.events)
    texts = {**records, "raw": [orjson.dumps(e) for e in records["events"]]}
    assert render_applied(records) == render_applied(texts), "the two paths must agree"
    for _ in range(args.rounds):
        for label, batch in (("from records", records), ("appended to the text", texts)):
            started = time.process_time()
            for _ in range(50):
                render_applied(batch)
            each = 1e6 * (time.process_time() - started) / (50 * args.events)
            print(f"lines {label}: {each:.2f} us CPU per event")


if __name__ == "__main__":
    main()
