"""After a load test: was every accepted event applied, exactly once?

Two independent readings are compared with what the API accepted:

- the users' delta records in Redis (``events`` of each record: what the trainers committed),
  when the Redis of the service is reachable;
- the users' models through the API (``events_applied`` of ``GET /v1/users/{user}/model``),
  which works against any host.

The trainers work asynchronously, so the reading is repeated until it reaches the expected
count and stays there (or a timeout says the trainers are stuck or an event was lost).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis
import urllib3

from fedlearn.store import Store

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", re.MULTILINE)


def metric_samples(url: str, name: str) -> dict[str, float]:
    """Every sample of ``name`` in ``url``/metrics, by its label set (``""`` for none)."""
    answer = urllib3.request("GET", f"{url}/metrics", timeout=10.0)
    if answer.status != 200:
        raise RuntimeError(f"GET {url}/metrics answered {answer.status}")
    samples: dict[str, float] = {}
    for match in _SAMPLE.finditer(answer.data.decode()):
        if match.group(1) == name:
            labels = match.group(2) or ""
            samples[labels] = samples.get(labels, 0.0) + float(match.group(3))
    return samples


def metric_sum(url: str, name: str) -> float:
    """The sum of every sample of ``name`` (all label sets) in ``url``/metrics."""
    return sum(metric_samples(url, name).values())


def route_times(url: str) -> dict[str, tuple[float, float]]:
    """Per API route: (requests, seconds spent answering them), from the API's histogram."""
    sums = metric_samples(url, "fedlearn_http_request_duration_seconds_sum")
    counts = metric_samples(url, "fedlearn_http_request_duration_seconds_count")
    routes: dict[str, tuple[float, float]] = {}
    for labels, seconds in sums.items():
        method = re.search(r'method="([^"]*)"', labels)
        route = re.search(r'route="([^"]*)"', labels)
        key = f"{method.group(1) if method else '?'} {route.group(1) if route else '?'}"
        n, total = routes.get(key, (0.0, 0.0))
        routes[key] = (n + counts.get(labels, 0.0), total + seconds)
    return routes


def applied_in_redis(store: Store, users: Iterable[str] | None = None) -> int:
    """Events applied to ``users``' deltas (every user of every shard when ``None``)."""
    if users is None:
        return sum(record.events for s in store.shards for record in store.deltas.iter_shard(s))
    by_shard: dict[int, list[str]] = {}
    for user in users:
        by_shard.setdefault(store.shard_of(user), []).append(user)
    total = 0
    for shard, members in by_shard.items():
        for start in range(0, len(members), 500):
            found = store.deltas.get_many(shard, members[start : start + 500])
            total += sum(record.events for record in found.values())
    return total


def applied_via_api(url: str, admin_token: str, users: Sequence[str], threads: int = 8) -> int:
    """Events applied to ``users``' models, as ``GET /v1/users/{user}/model`` reports them."""
    http = urllib3.PoolManager(maxsize=threads, retries=False, timeout=30.0)
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}

    def one(user: str) -> int:
        answer = http.request("GET", f"{url}/v1/users/{user}/model", headers=headers)
        if answer.status != 200:
            raise RuntimeError(f"GET model of {user!r} answered {answer.status}")
        return int(answer.json()["events_applied"])

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(one, users))


def lag_in_redis(store: Store) -> Callable[[], float | None]:
    """The trainers' lag read from the service's Redis, as the API's gauge reads it."""
    return lambda: max((s.lag_seconds for s in store.telemetry.shard_stats()), default=0.0)


def lag_in_metrics(url: str) -> Callable[[], float | None]:
    """The trainers' lag from the API's gauge ``fedlearn_stream_lag_seconds`` (any host)."""

    def read() -> float | None:
        samples = metric_samples(url, "fedlearn_stream_lag_seconds")
        return max(samples.values()) if samples else None

    return read


class LagSampler(threading.Thread):
    """How far the trainers are behind during a stage: the age of the oldest entry no trainer
    has read yet, its maximum over shards every ``every_s`` seconds (``read``: from Redis when
    the run has it, which costs the API nothing; else from the API's /metrics, whose answer
    takes a worker's thread and the GIL for ~20 ms per scrape under load). Empty when it cannot
    be read."""

    def __init__(self, read: Callable[[], float | None], every_s: float = 2.0) -> None:
        super().__init__(daemon=True, name="lag-sampler")
        self.read = read
        self.every_s = every_s
        self.values: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every_s):
            try:
                value = self.read()
            except (urllib3.exceptions.HTTPError, RuntimeError, redis.RedisError):
                continue  # a busy service may not answer: the next reading will tell
            if value is not None:
                self.values.append(value)

    def stop(self) -> dict[str, float | None]:
        self._done.set()
        self.join()
        if not self.values:
            return {"max_s": None, "mean_s": None}
        return {"max_s": max(self.values), "mean_s": sum(self.values) / len(self.values)}


@dataclass(frozen=True)
class Drained:
    expected: int
    applied: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.applied == self.expected


def wait_drained(
    read: Callable[[], int], expected: int, *, timeout: float = 120.0, every: float = 0.5
) -> Drained:
    """Poll ``read`` until it returns ``expected`` twice in a row (``timeout`` at most).

    More than expected also ends the wait: an event applied twice will not un-apply itself.
    """
    started = time.monotonic()
    applied, previous = read(), None
    while time.monotonic() - started < timeout:
        if applied > expected or (applied == expected and previous == expected):
            break
        time.sleep(every)
        previous, applied = applied, read()
    return Drained(expected, applied, time.monotonic() - started)


def wait_shards_owned(store: Store, timeout: float = 60.0) -> float:
    """Wait until a trainer holds every shard (a service that was just started is still
    taking its leases: events sent before would measure that start, not the load); returns
    the seconds waited. Raises ``TimeoutError`` naming the shards still without an owner."""
    started = time.monotonic()
    while True:
        free = [s.shard for s in store.telemetry.shard_stats() if s.holder is None]
        if not free:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"no trainer took shards {free[:10]} within {timeout:.0f} s")
        time.sleep(0.2)


TRAINER_TOTALS = ("fresh_count", "fresh_sum", "batches", "batch_events", "batch_seconds")


def trainer_totals(store: Store) -> dict[str, float]:
    """Totals of the live trainers' own figures, from the snapshots they publish to Redis
    every ~2 s: their freshness histogram's count and sum (accepted, i.e. the entry's stream
    id, to commit; a sample of up to 64 events per batch), and their batches' count, events
    and seconds. A difference of two readings tells what the trainers did in between."""
    totals = dict.fromkeys(TRAINER_TOTALS, 0.0)
    for snap in store.telemetry.snapshots():
        totals["fresh_count"] += snap["freshness"]["count"]
        totals["fresh_sum"] += snap["freshness"]["sum"]
        totals["batches"] += snap["batches"]["count"]
        totals["batch_events"] += snap["batches"]["events"]
        totals["batch_seconds"] += snap["batches"]["seconds"]
    return totals


def trainer_share(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Between two :func:`trainer_totals`: mean accepted -> commit (ms), mean batch time (ms)
    and events per batch; ``None`` where the trainers did nothing (or restarted)."""
    d = {k: after[k] - before[k] for k in TRAINER_TOTALS}

    def ratio(num: float, den: float, scale: float = 1.0) -> float | None:
        return scale * num / den if den > 0 and num >= 0 else None

    return {
        "commit_mean_ms": ratio(d["fresh_sum"], d["fresh_count"], 1000.0),
        "batch_mean_ms": ratio(d["batch_seconds"], d["batches"], 1000.0),
        "events_per_batch": ratio(d["batch_events"], d["batches"]),
    }
