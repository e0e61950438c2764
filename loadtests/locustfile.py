"""fedlearn under load: visitors' sessions, an operator running aggregation rounds, a freshness
probe.

    FEDLEARN_ADMIN_TOKEN=$(fedlearn token --admin) locust -f loadtests/locustfile.py \\
        --headless -u 50 -r 10 -t 2m -H http://127.0.0.1:8000 --summary-file out/summary.json

(``loadtests/run.py`` does all of it, including starting the service.)

A :class:`SessionUser` is a browser tab: it draws a user id from a Zipf population (a few
users are very active), gets the user's token (minted by the app's backend with the admin
token through ``POST /v1/tokens``, once per user), fetches the user's model and, once per
base version, the immutable base (kept like the JS client keeps it; a page reload revalidates
it with ``If-None-Match`` and must get a 304), ranks candidates, then streams click/skip
batches with think times, sometimes ranking again. The task mix (``--mix``) adds page reloads
and bursts (a returning app flushing its offline queue). An :class:`AdminUser` starts an
aggregation round every ``--aggregate-every`` seconds and times it; a
:class:`FreshnessProbe` sends one event every ``--probe-every`` seconds and polls the user's
model (overlapping polls every few ms) until an answer shows the event (``events_applied``
grows): that time is reported as the pseudo-request ``FRESHNESS``. With ``--rate R`` the
session users send R requests/s together, on a shared schedule, instead of pacing themselves
by think times: a constant offered load (``loadtests/run.py --rate`` and ``--fractions``).

The run fails (non-zero exit) when the failure ratio of HTTP requests exceeds
``--max-fail-ratio``, their p99 exceeds ``--max-p99-ms``, a probe event never shows, a round
fails, or the locustfile raised. Everything the checks after the run need (events accepted, the
users they belong to, freshness samples) goes to ``--summary-file``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import urllib3
from locust import events
from locust.stats import StatsEntry
from users import AdminUser, FreshnessProbe, SessionUser, Shared
from workload import parse_mix, write_json

log = logging.getLogger("fedlearn.loadtest")

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
__all__ = ["AdminUser", "FreshnessProbe", "SessionUser"]  # the user classes locust runs


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    add = parser.add_argument
    add(
        "--admin-token",
        env_var="FEDLEARN_ADMIN_TOKEN",
        default="",
        is_secret=True,
        help="admin bearer token (`fedlearn token --admin`); mints the users' tokens. Empty: "
        "the service runs with FEDLEARN_AUTH=off",
    )
    add("--population", type=int, default=10_000, help="distinct user ids")
    add("--zipf", type=float, default=1.1, help="exponent of the users' activity (Zipf)")
    add("--user-prefix", default="", help="prefix of user and event ids (default: random)")
    add("--items", type=int, default=120, help="catalog size if GET /v1/items has none")
    add("--mix", default="session=8,reload=2,burst=1", help="weights of session,reload,burst")
    add("--batch-size", type=int, default=10, help="events per POST /v1/events")
    add("--batches", type=int, default=4, help="mean event batches per session")
    add("--think", type=float, default=1.0, help="mean think time between batches (s)")
    add("--pause", type=float, default=3.0, help="mean pause between sessions (s)")
    add("--candidates", type=int, default=50, help="items ranked per ranking")
    add("--shown", type=int, default=10, help="best items shown (and signalled) per ranking")
    add("--rerank", type=float, default=0.3, help="chance to rank again after a batch")
    add(
        "--rate",
        type=float,
        default=0.0,
        help="offered HTTP requests/s of all session users together, paced (no think times); "
        "0: users pace themselves by --think and --pause",
    )
    add("--aggregate-every", type=float, default=0.0, help="seconds between rounds; 0: none")
    add("--round-timeout", type=float, default=120.0, help="a round must end within (s)")
    add("--probe-every", type=float, default=1.0, help="seconds between probes; 0: none")
    add("--probe-timeout", type=float, default=30.0, help="a probe event must show within (s)")
    add("--max-fail-ratio", type=float, default=0.0, help="fail the run above this ratio")
    add("--max-p99-ms", type=float, default=1000.0, help="fail the run above this HTTP p99")
    add("--summary-file", default="", help="write the run's summary (JSON) here")


@events.init.add_listener
def _init(environment: Any, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None:  # used as a library: the caller sets Shared.current
        return
    for name in ("batch_size", "batches", "candidates", "shown", "items"):
        if getattr(options, name) < 1:
            raise ValueError(
                f"--{name.replace('_', '-')} must be >= 1, got {getattr(options, name)}"
            )
    if not (math.isfinite(options.rate) and options.rate >= 0):
        raise ValueError(f"--rate must be a finite number of requests/s >= 0, got {options.rate}")
    if not 0 <= options.rerank <= 1:
        raise ValueError(f"--rerank must be a probability in 0..1, got {options.rerank}")
    Shared.current = Shared(options)
    weights = parse_mix(options.mix)
    SessionUser.tasks = [
        method
        for name, method in (
            ("session", SessionUser.session),
            ("reload", SessionUser.reload),
            ("burst", SessionUser.burst),
        )
        for _ in range(weights[name])
    ]
    unwanted = set()
    if options.aggregate_every <= 0:
        unwanted.add(AdminUser)
    if options.probe_every <= 0:
        unwanted.add(FreshnessProbe)
    environment.user_classes[:] = [c for c in environment.user_classes if c not in unwanted]


@events.test_start.add_listener
def _test_start(environment: Any, **_kwargs: Any) -> None:
    shared = Shared.get()
    # --tags may have left a class without tasks; locust cannot start such a user.
    environment.user_classes[:] = [c for c in environment.user_classes if c.tasks]
    http = urllib3.PoolManager(retries=False, timeout=10.0)
    answer = http.request("GET", f"{environment.host}/v1/items?limit=1000", headers=shared.admin)
    if answer.status == 200 and answer.json().get("items"):
        shared.items = [item["id"] for item in answer.json()["items"]]
    else:
        log.warning(
            "GET /v1/items answered %s; ranking %d made-up ids i0..",
            answer.status,
            len(shared.items),
        )
    top = shared.population.share_of_top(0.01)
    log.info(
        "users %s-u1..u%d (Zipf %.2f: the top 1%% make %.0f%% of sessions), %d items",
        shared.tally.prefix,
        shared.population.size,
        shared.population.s,
        100 * top,
        len(shared.items),
    )


@events.quitting.add_listener
def _quitting(environment: Any, **_kwargs: Any) -> None:
    """Judge the run (locust's exit code) and write the summary."""
    if Shared.current is None:
        return
    options, tally = Shared.current.options, Shared.current.tally
    stats = environment.stats
    http = StatsEntry(stats, "HTTP", "", use_response_times_cache=False)
    for (_name, method), entry in stats.entries.items():
        if method in HTTP_METHODS:
            http.extend(entry)
    ratio = http.num_failures / http.num_requests if http.num_requests else 0.0
    p99 = http.get_response_time_percentile(0.99) if http.num_requests else 0.0
    problems = []
    if not http.num_requests:
        problems.append("no HTTP request was made")
    if ratio > options.max_fail_ratio:
        problems.append(f"failure ratio {ratio:.4f} > --max-fail-ratio {options.max_fail_ratio}")
    if p99 > options.max_p99_ms:
        problems.append(f"HTTP p99 {p99:.0f} ms > --max-p99-ms {options.max_p99_ms:.0f}")
    if tally.freshness_timeouts:
        problems.append(f"{tally.freshness_timeouts} probe event(s) did not show in the model")
    bad_rounds = [r for r in tally.rounds if r["status"] not in ("done", "skipped", "unfinished")]
    if bad_rounds:
        problems.append(f"{len(bad_rounds)} aggregation round(s) did not succeed: {bad_rounds}")
    runner = environment.runner
    if runner is not None and runner.exceptions:
        problems.append(f"{len(runner.exceptions)} exception(s) raised in the locustfile")
    for problem in problems:
        log.error("load test failed: %s", problem)
    environment.process_exit_code = 1 if problems else 0
    if options.summary_file:
        write_json(
            options.summary_file,
            tally.summary(
                requests=http.num_requests,
                failures=http.num_failures,
                failure_ratio=ratio,
                p50_ms=http.get_response_time_percentile(0.5) if http.num_requests else None,
                p99_ms=p99,
                resent=sum(e.num_requests for (_n, m), e in stats.entries.items() if m == "RESENT"),
                rps=http.total_rps,
                problems=problems,
            ),
        )


# --- the users ------------------------------------------------------------------------------
