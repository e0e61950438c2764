"""Redis round trips and CPU per API request, before and after one change, interleaved.

    .venv/bin/python benchmarks/bench_api_checks.py --before DIR [--requests 3000 --rounds 3]
        [--before-python DIR/.venv/bin/python]

``DIR`` holds the ``fedlearn`` package to compare with (e.g. ``git archive <commit> fedlearn |
tar -x -C DIR``, or another worktree, run by its own venv's ``--before-python``); "after" is
the package installed here. Each run is a fresh process that puts
its copy of ``fedlearn`` first on ``sys.path``, builds the app a gunicorn worker builds
(``create_app``, auth on, the default rate limits) over its own embedded redis-server, and
sends each hot route ``--requests`` times with user tokens of 2,000 users (none near its
limit), each user first given a delta of ~20 events (as a session leaves): ``POST /v1/events``
(one event), ``POST .../rank`` (50 candidates), ``GET .../model``. Requests go straight to the
app's WSGI callable with a prepared environ, as a gunicorn worker calls it (Flask's test
client builds one per request, work of its own that blurred the route's figures). Round
trips are counted client-side (every send of redis-py's connections: a pipeline or a script is
one); CPU is this process's (the app), and the redis-server's from ``INFO cpu``; p50 and p99
are each request's wall time in that loop (one request at a time: the latency the route adds,
without queueing). Runs alternate before/after, ABBA. Last,
the two checks alone and the model GET's reads alone, each in one process (``checks_alone``,
``reads_alone``), where the route's other work does not drown the difference.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROUTES = ("events", "rank", "model")
SECRET = "bench-api-checks-secret-0123456789"
N_USERS = 2000


def _redis_cpu_s(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def one(n_requests: int) -> dict[str, Any]:
    import orjson
    from bench_api_gc import N_ITEMS, _service, _train
    from roundtrips import counting_round_trips
    from werkzeug.test import EnvironBuilder

    from fedlearn.api import issue_token
    from fedlearn.api.app import create_app
    from fedlearn.devtools import EmbeddedRedis

    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(Path(tmp) / "redis") as server,
        counting_round_trips() as trips,
    ):
        settings, store = _service(Path(tmp), server.url, auth=True, secret_key=SECRET)
        app = create_app(settings, store)
        environ = EnvironBuilder(path="/", base_url="http://127.0.0.1:8000").get_environ()
        users = [f"u{i}" for i in range(N_USERS)]
        tokens = {u: f"Bearer {issue_token(settings, user=u).token}" for u in users}
        items = [{"id": f"i{i}"} for i in range(0, N_ITEMS, N_ITEMS // 50)]

        def call(method: str, path: str, user: str, body: Any = None) -> tuple[str, bytes]:
            data = b"" if body is None else orjson.dumps(body)
            head = {"REQUEST_METHOD": method, "PATH_INFO": path, "HTTP_AUTHORIZATION": tokens[user],
                    "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(data)),
                    "wsgi.input": io.BytesIO(data)}  # fmt: skip
            status: list[str] = []
            chunks = app({**environ, **head}, lambda s, h, e=None: status.append(s))
            answer = b"".join(chunks)
            getattr(chunks, "close", lambda: None)()
            return status[0], answer

        def events(user: str, ids: range) -> list[dict[str, Any]]:
            return [{"event_id": f"e-{user}-{i}", "user": user, "ts": time.time(),
                     "item": f"i{(i * 7) % N_ITEMS}", "signal": "click"} for i in ids]  # fmt: skip

        def request(route: str, i: int) -> None:
            user = users[i % N_USERS]
            if route == "events":
                status, answer = call("POST", "/v1/events", user, {"events": events(user, [i])})
            elif route == "rank":
                body = {"items": items, "k": 10}
                status, answer = call("POST", f"/v1/users/{user}/rank", user, body)
            else:
                status, answer = call("GET", f"/v1/users/{user}/model", user)
            if status[:3] not in ("200", "202"):
                raise RuntimeError(f"{route} answered {status}: {answer[:200]!r}")

        for user in users:  # each user a delta of ~20 rows, as after a session
            status, answer = call("POST", "/v1/events", user, {"events": events(user, range(20))})
            if status[:3] != "202":
                raise RuntimeError(f"the warm-up's events answered {status}: {answer[:200]!r}")
        _train(store, settings)
        for i in range(200):  # warm up: scripts loaded, caches filled
            for route in ROUTES:
                request(route, N_USERS + i)
        for route in ROUTES:
            trips[0], cpu, redis_cpu = 0, time.process_time(), _redis_cpu_s(store.client)
            walls = []
            for i in range(n_requests):
                started = time.perf_counter()
                request(route, i)
                walls.append(time.perf_counter() - started)
            n = trips[0]  # before INFO's own round trip
            walls.sort()
            results[route] = {
                "trips": n / n_requests,
                "cpu_us": 1e6 * (time.process_time() - cpu) / n_requests,
                "redis_cpu_us": 1e6 * (_redis_cpu_s(store.client) - redis_cpu) / n_requests,
                "p50_us": 1e6 * walls[n_requests // 2],
                "p99_us": 1e6 * walls[int(n_requests * 0.99)],
            }
        store.close()
    return results


def alternate(
    variants: dict[str, Callable[[str], Any]], n_calls: int, rounds: int
) -> dict[str, list[float]]:
    """CPU and wall microseconds per call of each variant (``name, cpu`` / ``name, wall``),
    over blocks of ``n_calls`` calls alternating ABBA; the first block warms up, uncounted."""
    out: dict[str, list[float]] = {f"{n}, {c}": [] for n in variants for c in ("cpu", "wall")}
    order = list(variants.items())
    for r in range(2 * rounds + 1):
        for name, call in order if r % 2 else order[::-1]:
            started, wall = time.process_time(), time.perf_counter()
            for i in range(n_calls):
                call(f"u{i % N_USERS}")
            if r:
                out[f"{name}, cpu"].append(1e6 * (time.process_time() - started) / n_calls)
                out[f"{name}, wall"].append(1e6 * (time.perf_counter() - wall) / n_calls)
    return out


def checks_alone(n_calls: int, rounds: int) -> dict[str, list[float]]:
    """The two checks of a rate-limited route alone, on "after"'s code: the revocation GET
    then the rate script (two round trips, as before), or the rate script that also checks
    revocation (one)."""
    from fedlearn.devtools import EmbeddedRedis
    from fedlearn.store import Store
    from fedlearn.store.ratelimit import Rate, RateLimiter
    from fedlearn.store.revocations import Revocations

    rate = Rate(per_s=1e6, burst=1000)  # never limits: every call does the full work
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(Path(tmp) / "redis") as server,
        Store.from_url(server.url, 8) as store,
    ):
        limits, revocations = RateLimiter(store.client, 8), Revocations(store.client, 8)
        issued_at = time.time()

        def two(user: str) -> None:
            revocations.revoked_at(user)
            limits.take("events", user, rate)

        def one_trip(user: str) -> None:
            limits.take("events", user, rate, issued_at=issued_at)

        return alternate({"two trips": two, "one trip": one_trip}, n_calls, rounds)


def reads_alone(n_calls: int, rounds: int) -> dict[str, list[float]]:
    """The model GET's reads alone, on "after"'s code, users with a 2 KB delta record: the
    revocation GET, the base pointer's GET and the record's pipeline (three round trips, as
    before), or ``store.user_reads.read`` (one)."""
    from fedlearn.devtools import EmbeddedRedis
    from fedlearn.store import Store, keys
    from fedlearn.store.revocations import Revocations

    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(Path(tmp) / "redis") as server,
        Store.from_url(server.url, 8) as store,
    ):
        store.client.set(keys.base_current(), "bench-1")
        for i in range(N_USERS):
            user = f"u{i}"
            store.client.hset(
                keys.delta(store.shard_of(user), user),
                mapping={"delta": b"d" * 2048, "last_event": "1-1", "base": "bench-1",
                         "generation": 0, "events": 20, "gate": b"g" * 28},
            )  # fmt: skip
        revocations = Revocations(store.client, 8)

        def three(user: str) -> None:
            revocations.revoked_at(user)
            store.bases.current_version()
            store.deltas.get(store.shard_of(user), user)

        def one_trip(user: str) -> None:
            store.user_reads.read(user, revocation=True)

        return alternate({"three trips": three, "one trip": one_trip}, n_calls, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="directory holding fedlearn/ (required)")
    parser.add_argument(
        "--before-python", default=sys.executable, help="the interpreter of the before runs"
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.requests)))
        return
    if args.before is None or not (args.before / "fedlearn").is_dir():
        parser.error(f"--before must be a directory holding fedlearn/, got {args.before}")
    here = Path(__file__).resolve().parent
    paths = {"before": f"{args.before.resolve()}:{here}", "after": f"{here.parent}:{here}"}
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for variant in ("before", "after") if r % 2 == 0 else ("after", "before"):
            env = {**os.environ, "PYTHONPATH": paths[variant]}
            python = args.before_python if variant == "before" else sys.executable
            command = [python, __file__, "--one", "--requests", str(args.requests)]
            out = subprocess.run(command, capture_output=True, text=True, env=env)
            if out.returncode:
                raise SystemExit(f"the {variant} run failed:\n{out.stderr[-2000:]}")
            runs[variant].append(json.loads(out.stdout.splitlines()[-1]))
    print(f"{args.requests:,} requests per route and run, {args.rounds} runs each, ABBA; "
          f"medians over runs (the runs' spread in brackets)")  # fmt: skip
    for route in ROUTES:
        for variant, results in runs.items():
            figures = []
            for field, unit in (("trips", ""), ("cpu_us", " us"), ("redis_cpu_us", " us"),
                                ("p50_us", " us"), ("p99_us", " us")):  # fmt: skip
                values = [run[route][field] for run in results]
                figures.append(f"{field} {statistics.median(values):.2f}{unit} "
                               f"[{min(values):.2f}-{max(values):.2f}]")  # fmt: skip
            print(f"{route:>6} {variant:>6}: " + ", ".join(figures))
    for what, alone in (("the checks", checks_alone), ("the model GET's reads", reads_alone)):
        for name, values in alone(args.requests, args.rounds).items():
            print(f"{what} alone, {name}: {statistics.median(values):.1f} us per request "
                  f"[{min(values):.1f}-{max(values):.1f}]")  # fmt: skip


if __name__ == "__main__":
    main()
