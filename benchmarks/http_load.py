"""A small, cheap HTTP load generator: N keep-alive connections on gevent + geventhttpclient.

    python benchmarks/http_load.py SPEC.json      # prints one JSON result on stdout

It runs in its own process (gevent patches the standard library) and costs a few tens of
microseconds per request, so on this 2-core machine it is not the bottleneck of what it
measures (its CPU use is reported anyway). ``SPEC.json`` holds:

- ``url``: ``http://127.0.0.1:PORT``; ``connections``; ``warmup_s`` (not measured),
  ``seconds`` (measured), ``max_requests`` (a bound on the whole run);
- ``rate`` (optional): total requests/s, paced per connection (open loop); else closed loop;
- ``mode: "ingest"``: ``POST path`` with ``batch`` events of one user each, round robin over
  ``users`` (``[[user, token], ...]``), unique event ids under ``prefix``, items from ``items``;
- ``mode: "get"``: ``GET`` round robin over ``gets`` (``[[path, token], ...]``).

The result: requests and their statuses in the measured window, requests/s, latency p50, p90,
p99 and max (ms, from sending the request to the last byte of the answer), events accepted
(ingest), and the generator's own CPU seconds.
"""

from __future__ import annotations

import os

# Resolve 127.0.0.1 in place: gevent's default resolver hands every lookup to a thread, which
# costs more than the request itself when a server closes each connection (sync workers).
os.environ.setdefault("GEVENT_RESOLVER", "block")

from gevent import monkey

monkey.patch_all()

import itertools  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
import orjson  # noqa: E402
from geventhttpclient import HTTPClient  # noqa: E402


class Run:
    """The shared state of one load run."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.mode = spec["mode"]
        if self.mode not in ("ingest", "get"):
            raise ValueError(f"spec 'mode' must be 'ingest' or 'get', got {self.mode!r}")
        self.connections = int(spec["connections"])
        self.started = time.perf_counter()
        self.window = (
            self.started + spec["warmup_s"],
            self.started + spec["warmup_s"] + spec["seconds"],
        )
        self.max_requests = int(spec.get("max_requests", 10**9))
        self.issued = 0
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.accepted = 0
        self.errors: Counter[str] = Counter()
        self.seq = itertools.count()

    def more(self) -> bool:
        return time.perf_counter() < self.window[1] and self.issued < self.max_requests

    def record(self, sent: float, done: float, status: int, body: bytes) -> None:
        if not self.window[0] <= done <= self.window[1]:
            return
        self.latencies.append(done - sent)
        self.statuses[status] += 1
        if self.mode == "ingest" and status == 202:
            self.accepted += orjson.loads(body)["accepted"]


def ingest_request(run: Run, k: int) -> tuple[str, bytes, dict[str, str]]:
    spec = run.spec
    seq = next(run.seq)
    user, token = spec["users"][(seq + k) % len(spec["users"])]
    items = spec["items"]
    ts = time.time()
    events = [
        {
            "event_id": f"{spec['prefix']}-{seq}-{i}",
            "user": user,
            "item": items[(seq * 7 + i) % len(items)],
            "signal": "click" if (seq + i) % 4 == 0 else "skip",
            "ts": ts,
            "context": {"hour": str((seq + i) % 24)},
        }
        for i in range(spec["batch"])
    ]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return spec["path"], orjson.dumps({"events": events}), headers


def get_request(run: Run, k: int) -> tuple[str, bytes, dict[str, str]]:
    path, token = run.spec["gets"][(next(run.seq) + k) % len(run.spec["gets"])]
    return path, b"", {"Authorization": f"Bearer {token}"} if token else {}


def connection(run: Run, k: int) -> None:
    url = urlsplit(run.spec["url"])
    client = HTTPClient(
        url.hostname, url.port, concurrency=1, connection_timeout=10.0, network_timeout=60.0
    )
    method, build = ("POST", ingest_request) if run.mode == "ingest" else ("GET", get_request)
    rate = run.spec.get("rate")
    interval = run.connections / rate if rate else 0.0
    next_at = run.started + interval * k / run.connections  # connections start staggered
    try:
        while run.more():
            if interval:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    gevent.sleep(delay)
                    if not run.more():
                        break
                # Behind schedule: go on from now rather than burst to catch up.
                next_at = max(next_at, time.perf_counter() - interval) + interval
            run.issued += 1
            path, body, headers = build(run, k)
            sent = time.perf_counter()
            try:
                response = client.request(method, path, body=body, headers=headers)
                data = response.read()
                response.release()
            except Exception as exc:  # a refused or reset connection: count it and go on
                run.errors[type(exc).__name__] += 1
                gevent.sleep(0.01)
                continue
            run.record(sent, time.perf_counter(), response.status_code, data)
    finally:
        client.close()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(path: str) -> int:
    with open(path, "rb") as handle:
        spec = orjson.loads(handle.read())
    run = Run(spec)
    cpu = time.process_time()
    gevent.joinall([gevent.spawn(connection, run, k) for k in range(run.connections)])
    latencies = sorted(run.latencies)
    measured = min(time.perf_counter(), run.window[1]) - run.window[0]
    result = {
        "requests": len(latencies),
        "seconds": measured,
        "rps": len(latencies) / measured if measured > 0 else 0.0,
        "statuses": {str(k): v for k, v in sorted(run.statuses.items())},
        "errors": dict(run.errors),
        "accepted": run.accepted,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p90_ms": 1000 * percentile(latencies, 0.90),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * (latencies[-1] if latencies else 0.0),
        "generator_cpu_s": time.process_time() - cpu,
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: http_load.py SPEC.json")
    raise SystemExit(main(sys.argv[1]))
