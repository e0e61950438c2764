"""The fedlearn API over HTTP: ingest throughput, model fetch latency, freshness under load.

    .venv/bin/python benchmarks/bench_ingest.py [--seconds 10] [--connections 50]

Against ``python -m fedlearn api`` (gunicorn, 2 gthread workers, as ``fedlearn up`` runs it)
on an embedded redis-server (AOF everysec), 8 shards, a published base (k = 10) and a catalog
of 120 items; the load comes from ``http_load.py`` in its own process, on 127.0.0.1.

1. Ingest: ``POST /v1/events`` with 50-event batches, each from one of 1,000 users with that
   user's own token (what a browser sends), over N keep-alive connections; no trainer running
   (the streams are made long enough to hold the run).
2. Model fetch: ``GET /v1/users/{u}/model`` at one connection, round robin over users whose
   deltas the trainer built from ``--fetch-events`` events each.
3. Freshness under load: a trainer (``fedlearn worker``) runs while ingest is paced at
   ``--fresh-rate`` events/s; a probe sends one event every ``--probe-every`` s and polls the
   user's model (every 5 ms) until ``events_applied`` counts it: accepted (202) -> visible.
   The trainer's own histogram ``fedlearn_freshness_seconds`` (stream id -> commit, every
   event) is read too.
"""

from __future__ import annotations

import argparse
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import urllib3
from procs import SECRET, load, our_api, print_on_fresh_redis, trainer

from fedlearn.api.auth import issue_token
from fedlearn.config import load_settings
from fedlearn.model import Base
from fedlearn.store import Store
from fedlearn.store.items import Catalog
from fedlearn.telemetry.summary import histogram_quantile, per_bucket

N_SHARDS = 8
N_ITEMS = 120
BATCH = 50
VERSION = "bench-api"


def publish(store: Store, *, current: bool = True) -> None:
    """A base over the catalog's items, genres and hours, and the catalog itself; the base
    is made current unless ``current`` is False (a trainer then waits for it)."""
    genres = [f"genre=g{g}" for g in range(8)]
    hours = [f"hour={h}" for h in range(24)]
    base = Base.fresh([f"item=i{i}" for i in range(N_ITEMS)] + genres + hours, 10, version=VERSION)
    store.bases.put_base(base.version, base.to_bytes(), {"generation": 0})
    if current:
        store.bases.set_current(base.version)
    Catalog(store.client).put_items(
        {f"i{i}": {"title": f"film {i}", "features": {genres[i % 8]: 1.0}} for i in range(N_ITEMS)}
    )


def tokens(users: list[str]) -> list[list[str]]:
    settings = load_settings(secret_key=SECRET)
    return [[user, issue_token(settings, user=user).token] for user in users]


def wait_applied(store: Store, users: list[str], expected: int, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    applied = 0
    while time.monotonic() < deadline:
        applied = 0
        for user in users:
            record = store.deltas.get(store.shard_of(user), user)
            applied += record.events if record else 0
        if applied >= expected:
            break
        time.sleep(0.2)
    return applied


class Probe(threading.Thread):
    """Sends one event every ``every`` s and times until the user's model shows it."""

    def __init__(self, url: str, user: str, token: str, every: float) -> None:
        super().__init__(daemon=True, name="freshness-probe")
        self.url, self.user, self.every = url, user, every
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.http = urllib3.PoolManager(retries=False, timeout=30.0)
        self.samples: list[float] = []
        self.timeouts = 0
        self.done = threading.Event()

    def run(self) -> None:
        sent = 0
        while not self.done.wait(self.every):
            event = {
                "event_id": f"probe-{sent}",
                "user": self.user,
                "item": f"i{sent % N_ITEMS}",
                "signal": "click",
                "ts": time.time(),
            }
            body = orjson.dumps({"events": [event]})
            answer = self.http.request(
                "POST", f"{self.url}/v1/events", body=body, headers=self.headers
            )
            if answer.status != 202:
                raise RuntimeError(f"probe POST answered {answer.status}: {answer.data[:300]!r}")
            accepted = time.perf_counter()
            sent += 1
            while time.perf_counter() - accepted < 30.0:
                model = self.http.request(
                    "GET", f"{self.url}/v1/users/{self.user}/model", headers=self.headers
                )
                if model.status == 200 and model.json()["events_applied"] >= sent:
                    self.samples.append((time.perf_counter() - accepted) * 1000)
                    break
                time.sleep(0.005)
            else:
                self.timeouts += 1


def histogram(metrics_url: str, name: str) -> dict[float, float]:
    text = urllib3.request("GET", metrics_url, timeout=10).data.decode()
    pattern = re.compile(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', re.MULTILINE)
    return {float(le): float(count) for le, count in pattern.findall(text)}


def quantile_between(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Prometheus-style quantile (linear within a bucket) of the observations in between."""
    bounds = sorted(after)
    cumulative = [after[b] - before.get(b, 0.0) for b in bounds]
    value = histogram_quantile(q, bounds, per_bucket(cumulative))
    return float("nan") if value is None else value


def measure(
    redis_url: str,
    folder: Path,
    *,
    connections: int = 50,
    seconds: float = 10.0,
    warmup_s: float = 2.0,
    fetch_users: int = 200,
    fetch_events: int = 30,
    fresh_rate: float = 5000.0,
    probe_every: float = 0.1,
) -> dict[str, Any]:
    users = tokens([f"bench-u{i}" for i in range(1000)])
    items = [f"i{i}" for i in range(N_ITEMS)]
    result: dict[str, Any] = {}
    with Store.from_url(redis_url, N_SHARDS) as store:
        store.client.flushall()
        publish(store)
        with our_api(redis_url, folder / "api", N_SHARDS) as url:
            result["ingest"] = ingest = load(
                {
                    "mode": "ingest",
                    "url": url,
                    "path": "/v1/events",
                    "connections": connections,
                    "warmup_s": warmup_s,
                    "seconds": seconds,
                    "batch": BATCH,
                    "users": users,
                    "items": items,
                    "prefix": "bench",
                },
                folder,
            )
            ingest["events_per_s"] = ingest["accepted"] / ingest["seconds"]
            store.client.flushall()  # drop the backlog: the trainer starts from empty streams
            publish(store)
            with trainer(redis_url, folder / "api", N_SHARDS) as metrics_url:
                result["fetch"] = fetch(
                    store, url, folder, fetch_users, fetch_events, seconds, warmup_s
                )
                result["freshness"] = freshness(
                    url,
                    metrics_url,
                    folder,
                    users,
                    items,
                    rate=fresh_rate,
                    seconds=seconds,
                    probe_every=probe_every,
                )
        store.client.flushall()
    return result


def fetch(
    store: Store,
    url: str,
    folder: Path,
    n_users: int,
    n_events: int,
    seconds: float,
    warmup_s: float,
) -> dict[str, Any]:
    """Model fetch latency at one connection over users with ``n_events`` applied each."""
    users = tokens([f"fetch-u{i}" for i in range(n_users)])
    now = time.time()
    by_shard: dict[int, list[dict[str, Any]]] = {}
    for u, (user, _token) in enumerate(users):
        for e in range(n_events):
            by_shard.setdefault(store.shard_of(user), []).append(
                {
                    "event_id": f"f-{u}-{e}",
                    "user": user,
                    "item": f"i{(u * 13 + e * 7) % N_ITEMS}",
                    "signal": "click" if e % 3 == 0 else "skip",
                    "ts": now,
                    "context": {"hour": str(e % 24)},
                    "received_at": now,
                }
            )
    for shard, records in by_shard.items():
        store.streams.append_events(shard, records)
    names = [user for user, _ in users]
    applied = wait_applied(store, names, n_users * n_events)
    gets = [[f"/v1/users/{user}/model", token] for user, token in users]
    result = load(
        {
            "mode": "get",
            "url": url,
            "gets": gets,
            "connections": 1,
            "warmup_s": warmup_s,
            "seconds": seconds,
        },
        folder,
    )
    sample = urllib3.request(
        "GET", f"{url}{gets[0][0]}", headers={"Authorization": f"Bearer {gets[0][1]}"}
    )
    result.update(applied=applied, body_bytes=len(sample.data), events_per_user=n_events)
    return result


def freshness(
    url: str,
    metrics_url: str,
    folder: Path,
    users: list[list[str]],
    items: list[str],
    *,
    rate: float,
    seconds: float,
    probe_every: float,
) -> dict[str, Any]:
    name = "fedlearn_freshness_seconds"
    before = histogram(metrics_url, name)
    probe_user = "probe-user"
    probe = Probe(url, probe_user, tokens([probe_user])[0][1], probe_every)
    probe.start()
    background = load(
        {
            "mode": "ingest",
            "url": url,
            "path": "/v1/events",
            "connections": 10,
            "warmup_s": 0.0,
            "seconds": seconds,
            "batch": BATCH,
            "users": users,
            "items": items,
            "prefix": "fresh",
            "rate": rate / BATCH,
        },
        folder,
    )
    probe.done.set()
    probe.join(60)
    after = histogram(metrics_url, name)
    samples = np.array(probe.samples) if probe.samples else np.array([np.nan])
    return {
        "rate_events_per_s": rate,
        "load_events_per_s": background["accepted"] / background["seconds"],
        "load_p99_ms": background["p99_ms"],
        "probes": len(probe.samples),
        "timeouts": probe.timeouts,
        "p50_ms": float(np.percentile(samples, 50)),
        "p99_ms": float(np.percentile(samples, 99)),
        "trainer_p50_ms": 1000 * quantile_between(before, after, 0.50),
        "trainer_p99_ms": 1000 * quantile_between(before, after, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--fetch-events", type=int, default=30)
    parser.add_argument("--fresh-rate", type=float, default=5000.0, help="events/s")
    args = parser.parse_args()
    print_on_fresh_redis(
        measure,
        connections=args.connections,
        seconds=args.seconds,
        fetch_events=args.fetch_events,
        fresh_rate=args.fresh_rate,
    )


if __name__ == "__main__":
    main()
