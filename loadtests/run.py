"""Run the locust load test headless and check that no event was lost.

    .venv/bin/python loadtests/run.py                        # 2 min, 50 users, own service
    .venv/bin/python loadtests/run.py --users 50,100,200,400 --run-time 45s   # saturation sweep
    .venv/bin/python loadtests/run.py --fractions 0.01,0.5   # find saturation, then 1 % and 50 %
    .venv/bin/python loadtests/run.py --rate 400 --run-time 1m   # a constant 400 requests/s
    .venv/bin/python loadtests/run.py --host http://127.0.0.1:8000 --redis-url redis://...

Without ``--host`` it starts ``fedlearn up --demo`` itself (127.0.0.1, a free port, a temp data
folder, Celery only with ``--celery``) and stops it at the end. Each stage (one per ``--users``
or ``--rate`` value; ``rates.py`` tells about rate-controlled stages and ``--fractions``) is
one ``locust --headless`` run with its CSV and HTML reports in ``--out``
(``artifacts/loadtest/u<N>_*`` or ``r<rate>_*``), while the CPU of every part (API, trainers,
Redis, locust) is sampled. After each stage it waits for the trainers to drain and checks that
the events the API said it holds (the 202 answers' ``accepted``, plus ``duplicates`` of resent
batches, tallied by the locustfile) are exactly the events applied to those users' deltas;
against its own service it also checks every delta in Redis, and the API's counter
``fedlearn_events_accepted_total`` when /metrics has it. It prints one table (and
writes ``result.json``); the exit code is 0 only when every stage passed locust's criteria and
lost nothing. Arguments after ``--`` go to locust unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import psutil
from check import (
    LagSampler,
    applied_in_redis,
    applied_via_api,
    lag_in_metrics,
    lag_in_redis,
    metric_samples,
    route_times,
    trainer_share,
    trainer_totals,
    wait_drained,
    wait_shards_owned,
)
from rates import (
    Stage,
    add_load_arguments,
    check_load_arguments,
    find_saturation,
    fraction_stages,
    seconds_of,
)
from service import CpuSampler, Service
from workload import write_json

from fedlearn.store import Store

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
ACCEPTED = "fedlearn_events_accepted_total"
SNAPSHOT_WAIT_S = 2.5  # trainers publish their figures every 2 s


def api_accepted(url: str) -> float | None:
    """The API's counter of accepted events (all workers), ``None`` when /metrics lacks it:
    a counter appears only once incremented, and only if the workers' samples reach /metrics
    (gunicorn's multiprocess folder; ``service.log`` warns when they do not)."""
    samples = metric_samples(url, ACCEPTED)
    return sum(samples.values()) if samples else None


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(p)
    p.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second")
    p.add_argument("--run-time", default="2m", help="per stage: 90, 45s, 2m, 1h30m")
    p.add_argument("--out", type=Path, default=Path("artifacts/loadtest"), help="reports folder")
    p.add_argument("--host", default="", help="test this running service instead of our own")
    p.add_argument(
        "--admin-token",
        default=os.environ.get("FEDLEARN_ADMIN_TOKEN", ""),
        help="with --host: an admin token (default $FEDLEARN_ADMIN_TOKEN)",
    )
    p.add_argument("--redis-url", default="", help="with --host: its Redis, for the checks")
    p.add_argument("--trainers", type=int, default=1, help="own service: trainer processes")
    p.add_argument("--api-workers", type=int, default=2, help="own service: gunicorn workers")
    p.add_argument("--celery", action="store_true", help="own service: start Celery too")
    p.add_argument(
        "--aggregate-every",
        type=float,
        default=None,
        help="seconds between admin rounds (default 30 with --celery, else none)",
    )
    p.add_argument("--max-p99-ms", type=float, default=1000.0, help="locust criterion")
    p.add_argument("--max-fail-ratio", type=float, default=0.0, help="locust criterion")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="wait for the trainers (s)")
    args = p.parse_args(argv)
    try:
        args.seconds = seconds_of(args.run_time)
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    check_load_arguments(p, args)
    if args.aggregate_every is None:
        args.aggregate_every = 30.0 if args.celery else 0.0
    if args.host and not args.admin_token:
        p.error("--host needs an admin token: --admin-token or FEDLEARN_ADMIN_TOKEN")
    return args, extra


def admin_token_for(service: Service) -> str:
    from fedlearn.api.auth import issue_token
    from fedlearn.config import load_settings

    return issue_token(load_settings(data_dir=service.data_dir), admin=True).token


def locust_stats(csv_prefix: Path) -> dict[str, dict[str, float]]:
    """Per request name: count, failures, p50 and p99 (ms), from locust's ``_stats.csv``."""
    import csv

    rows = {}
    with (csv_prefix.parent / f"{csv_prefix.name}_stats.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            name = f"{row['Type']} {row['Name']}".strip()
            rows[name] = {
                "count": float(row["Request Count"]),
                "failures": float(row["Failure Count"]),
                "p50": float(row["50%"] or 0),
                "p99": float(row["99%"] or 0),
                "rps": float(row["Requests/s"]),
            }
    return rows


def run_stage(
    args: argparse.Namespace,
    extra: list[str],
    url: str,
    token: str,
    stage: Stage,
    service: Service | None,
    store: Store | None,
) -> dict[str, Any]:
    name, users, seconds = stage.name, stage.users, seconds_of(stage.run_time)
    prefix = f"lt{int(time.time())}{name.replace('.', '_')}"
    csv_prefix = args.out / name
    summary_file = args.out / f"{name}_summary.json"
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(args.spawn_rate if stage.rate is None else users),  # paced: all users at once
        "-t",
        stage.run_time,
        "--stop-timeout",
        "30",
        "-H",
        url,
        "--csv",
        str(csv_prefix),
        "--html",
        str(args.out / f"{name}_report.html"),
        "--summary-file",
        str(summary_file),
        "--user-prefix",
        prefix,
        "--aggregate-every",
        str(args.aggregate_every),
        "--max-p99-ms",
        str(args.max_p99_ms),
        "--max-fail-ratio",
        str(args.max_fail_ratio),
        "--only-summary",
        *(["--rate", str(stage.rate)] if stage.rate is not None else []),
        *extra,
    ]
    accepted_before = (api_accepted(url) or 0.0) if service else 0.0
    trainer_before = trainer_totals(store) if store is not None else None
    routes_before = route_times(url)
    offered = "" if stage.rate is None else f" --rate {stage.rate:g}"
    print(f"stage {name}: locust -u {users}{offered} -t {stage.run_time} ...", flush=True)
    with (args.out / f"{name}_locust.log").open("wb") as log:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, "FEDLEARN_ADMIN_TOKEN": token},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        locust = psutil.Process(proc.pid)

        def groups() -> dict[str, list[psutil.Process]]:
            parts = dict(service.processes()) if service else {}
            with contextlib.suppress(psutil.NoSuchProcess):  # locust has just exited
                parts["locust"] = [locust, *locust.children(recursive=True)]
            return parts

        sampler = CpuSampler(groups)
        sampler.start()
        lag = LagSampler(lag_in_metrics(url) if store is None else lag_in_redis(store))
        lag.start()
        code = proc.wait(seconds + 300)
        cpu = sampler.stop()
        trainer_lag = lag.stop()
    summary = orjson.loads(summary_file.read_bytes())
    expected = summary["events_held"]
    if store is not None:
        drained = wait_drained(
            lambda: applied_in_redis(store, summary["users"]), expected, timeout=args.drain_timeout
        )
    else:
        drained = wait_drained(
            lambda: applied_via_api(url, token, summary["users"]),
            expected,
            timeout=args.drain_timeout,
            every=2.0,
        )
    trainer = None
    if store is not None and trainer_before is not None:
        time.sleep(SNAPSHOT_WAIT_S)  # the trainers' next snapshot holds the whole stage
        trainer = trainer_share(trainer_before, trainer_totals(store))
    server_total = api_accepted(url) if service else None
    server_accepted = None if server_total is None else server_total - accepted_before
    stats = locust_stats(csv_prefix)
    server_ms = {}  # mean time the API spent per request, by route, in this stage
    for route, (n, seconds) in route_times(url).items():
        n0, s0 = routes_before.get(route, (0.0, 0.0))
        if n > n0:
            server_ms[route] = {"requests": n - n0, "mean_ms": 1000 * (seconds - s0) / (n - n0)}
    # Paced stages: rates over the paced users' own window (first to last answer), which
    # leaves out locust's start and stop; self-pacing users: over the whole run time.
    window = summary["paced_seconds"] if stage.rate is not None else seconds
    window = window if window > 0 else seconds
    return {
        "stage": name,
        "users": users,
        "fraction": stage.fraction,
        "offered_rps": stage.rate,
        "achieved_rps": summary["paced_rps"] if stage.rate is not None else None,
        "events_offered_per_s": summary["events_attempted"] / window,
        "locust_exit": code,
        "problems": summary["problems"],
        "requests": summary["requests"],
        "resent": summary["resent"],
        "failures": summary["failures"],
        "rps": summary["requests"] / seconds,
        "events_per_s": expected / window,
        "http_p50_ms": summary["p50_ms"],
        "http_p99_ms": summary["p99_ms"],
        "events_p99_ms": stats.get("POST /v1/events", {}).get("p99"),
        "model_p99_ms": stats.get("GET /v1/users/[user]/model", {}).get("p99"),
        "rank_p99_ms": stats.get("POST /v1/users/[user]/rank", {}).get("p99"),
        "freshness": summary["freshness"],
        "accepted": expected,
        "server_accepted": server_accepted,
        "applied": drained.applied,
        "drain_s": drained.seconds,
        "lost": expected - drained.applied,
        "ok": code == 0 and drained.ok and server_accepted in (None, expected),
        "cpu": cpu,
        "trainer_lag": trainer_lag,
        "server_ms": server_ms,
        "trainer": trainer,
        "app_users": len(summary["users"]),
    }


def table(rows: list[dict[str, Any]]) -> str:
    parts = sorted({part for row in rows for part in row["cpu"]} - {"gone", "machine"})
    parts.append("machine")
    head = [
        "users",
        "offered req/s",
        "req/s",
        "events/s sent / accepted",
        "fail / resent",
        "HTTP p50/p99 ms",
        "events p99",
        "model p99",
        "rank p99",
        "fresh p50/p99 ms",
        "fresh lower bound p99 ms",
        "trainer lag max s",
        "accepted",
        "applied",
        *[f"CPU {p} %" for p in parts],
        "ok",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        fresh = r["freshness"]
        lag_max = r["trainer_lag"]["max_s"]
        offered = r["offered_rps"]
        share = f" ({100 * r['fraction']:g} %)" if r["fraction"] else ""
        achieved = r["rps"] if r["achieved_rps"] is None else r["achieved_rps"]
        cells = [
            f"{r['users']}",
            "-" if offered is None else f"{offered:,.0f}{share}",
            f"{achieved:,.0f}",
            f"{r['events_offered_per_s']:,.0f} / {r['events_per_s']:,.0f}",
            f"{r['failures']} / {r['resent']}",
            f"{r['http_p50_ms'] or 0:.0f} / {r['http_p99_ms'] or 0:.0f}",
            f"{r['events_p99_ms'] or 0:.0f}",
            f"{r['model_p99_ms'] or 0:.0f}",
            f"{r['rank_p99_ms'] or 0:.0f}",
            f"{fresh['p50_ms'] or 0:.0f} / {fresh['p99_ms'] or 0:.0f} (n={fresh['samples']})",
            f"{fresh.get('low_p99_ms') or 0:.0f}",
            "-" if lag_max is None else f"{lag_max:.2f}",
            f"{r['accepted']:,}",
            f"{r['applied']:,}",
            *[f"{r['cpu'].get(p, {}).get('mean', 0):.0f}" for p in parts],
            "yes" if r["ok"] else "NO",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def routes_line(row: dict[str, Any]) -> str:
    """The API's own time per request, by route (its histogram), busiest route first."""
    if not row["server_ms"]:
        return "  API time per request: n/a (/metrics shows no request histogram; see service.log)"
    routes = sorted(row["server_ms"].items(), key=lambda kv: -kv[1]["requests"])
    parts = [f"{route} {r['mean_ms']:.1f} ms (x{r['requests']:,.0f})" for route, r in routes]
    line = f"  API time per request, {row['stage']}: " + "; ".join(parts)
    trainer = row.get("trainer") or {}
    if trainer.get("commit_mean_ms") is not None:
        line += (
            f"\n  trainers: accepted -> commit {trainer['commit_mean_ms']:.1f} ms mean, batches"
            f" {trainer['batch_mean_ms'] or 0:.1f} ms of {trainer['events_per_batch'] or 0:.0f}"
            f" events mean (their own figures)"
        )
    return line


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    ramp: list[dict[str, Any]] = []  # the saturation ramp's stages (--fractions)
    found: dict[str, Any] = {}
    final: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedlearn-loadtest-") as tmp:
        service = None
        if not args.host:
            service = Service(
                Path(tmp) / "data",
                args.out / "service.log",
                trainers=args.trainers,
                api_workers=args.api_workers,
                celery=args.celery,
            ).start()
            print(f"service: {service.url} (data in {service.data_dir})", flush=True)
        try:
            url = args.host.rstrip("/") or service.url  # type: ignore[union-attr]
            token = args.admin_token or admin_token_for(service)  # type: ignore[arg-type]
            redis_url = args.redis_url or (service.redis_url() if service else "")
            store = Store.from_url(redis_url, _n_shards(url)) if redis_url else None
            if service is not None and store is not None:
                print(
                    f"trainers own every shard after {wait_shards_owned(store):.1f} s", flush=True
                )

            def run(stage: Stage) -> dict[str, Any]:
                row = run_stage(args, extra, url, token, stage, service, store)
                print(table([row]).splitlines()[-1], flush=True)
                print(routes_line(row), flush=True)
                return row

            if args.fractions is not None:
                if args.saturation is None:
                    found = find_saturation(args, run)
                    ramp = found.pop("stages")
                else:
                    found = {"rate": args.saturation, "why": "given with --saturation"}
                rows.extend(run(stage) for stage in fraction_stages(args, found["rate"]))
            else:
                stages = (
                    [Stage.of_users(n, args.run_time) for n in args.users]
                    if args.users is not None
                    else [Stage.of_rate(r, args.run_time, hold_s=args.hold_s) for r in args.rate]
                )
                rows.extend(run(stage) for stage in stages)
            if service is not None and store is not None:
                # Only our stages sent events to our service: every delta together holds
                # exactly what they were told was accepted (and what the API counted).
                held = sum(r["accepted"] for r in ramp + rows)
                drained = wait_drained(lambda: applied_in_redis(store), held)
                counted = api_accepted(url)
                final = {
                    "held_total": held,
                    "server_accepted_total": counted,
                    "applied_total": drained.applied,
                    "ok": drained.ok and counted in (None, held),
                }
        finally:
            if service is not None:
                service.stop()
    if ramp:
        print("saturation ramp:")
        print(table(ramp))
    if found:
        print(f"saturation rate: {found['rate']:,.0f} req/s ({found['why']})")
    print(table(rows))
    if final:
        verdict = "ok" if final["ok"] else "MISMATCH"
        counted = final["server_accepted_total"]
        counter = "n/a (not in /metrics)" if counted is None else f"{counted:,.0f}"
        print(
            f"whole run: clients were told {final['held_total']:,} events were accepted, the "
            f"API's counter says {counter}, the deltas hold {final['applied_total']:,} "
            f"applied: {verdict}"
        )
    write_json(
        args.out / "result.json",
        {
            "argv": sys.argv,
            "saturation": {**found, "ramp": ramp},
            "stages": rows,
            "whole_run": final,
        },
    )
    print(f"reports in {args.out}/ (<stage>_report.html, <stage>_stats.csv, result.json)")
    # Ramp stages past the knee break locust's criteria by design; none may lose an event.
    ramp_ok = all(r["lost"] == 0 for r in ramp)
    return 0 if rows and all(r["ok"] for r in rows) and ramp_ok and final.get("ok", True) else 1


def _n_shards(url: str) -> int:
    import urllib3

    answer = urllib3.request("GET", f"{url}/readyz", timeout=10)
    return int(answer.json()["n_shards"]) if answer.status == 200 else 8


if __name__ == "__main__":
    raise SystemExit(main())
