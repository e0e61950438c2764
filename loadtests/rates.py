"""Rate-controlled load: stages at a constant offered request rate, and the saturation rate
(and ``run.py``'s load arguments: ``--users``, ``--rate``, ``--fractions`` and the ramp's).

A stage of ``run.py`` is either a number of self-pacing users (``--users``: each waits for its
answers and thinks, so the load follows the service's latency) or a constant offered rate
(``--rate``: the locustfile's shared :class:`~workload.Pacer` sends that many requests per
second whatever the latency, with enough users to hold them). ``--fractions`` first finds the
saturation rate with a short geometric ramp of rate stages and then runs a stage at each
given fraction of it.

The saturation rate is the highest offered rate the service still *followed*: it answered at
least ``follow`` of the offered requests per second, no request failed, and the HTTP p99 stayed
within the run's latency criterion (``--max-p99-ms``). The ramp stops at the first rate that
breaks any of these twice in a row (or at ``--ramp-max``), so it never drives the service far
past its knee.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One locust run: its name (the prefix of its report files), how many simulated users,
    and the offered request rate (``None``: the users pace themselves by think times)."""

    name: str
    users: int
    rate: float | None
    run_time: str
    fraction: float | None = None  # of the saturation rate, for the report

    @classmethod
    def of_users(cls, users: int, run_time: str) -> Stage:
        return cls(f"u{users}", users, None, run_time)

    @classmethod
    def of_rate(
        cls,
        rate: float,
        run_time: str,
        *,
        hold_s: float,
        prefix: str = "r",
        fraction: float | None = None,
    ) -> Stage:
        return cls(f"{prefix}{rate:g}", users_for(rate, hold_s), rate, run_time, fraction)


def users_for(rate: float, hold_s: float) -> int:
    """Users enough to hold ``rate`` requests/s when each answer takes up to ``hold_s``
    (Little's law), at least 4 and at most 2,000 (locust's one process stays light)."""
    return max(4, min(2000, math.ceil(rate * hold_s)))


def seconds_of(text: str) -> float:
    """Locust's ``--run-time`` syntax (``90``, ``45s``, ``2m``, ``1h30m``) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?", text.strip())
    if not text.strip() or parts is None:
        raise argparse.ArgumentTypeError(
            f"--run-time must look like 90, 45s, 2m or 1h30m: {text!r}"
        )
    hours, minutes, secs = (int(p or 0) for p in parts.groups())
    return float(hours * 3600 + minutes * 60 + secs)


def user_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"--users must be positive integers, e.g. 50,100: {text!r}"
        )
    return counts


def positive_floats(text: str, what: str, *, most: float = math.inf) -> list[float]:
    """``"0.01,0.5"`` -> [0.01, 0.5]; an argparse error naming ``what`` otherwise."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and 0 < v <= most for v in values):
        raise argparse.ArgumentTypeError(
            f"{what} must be numbers in (0, {most:g}], comma-separated: {text!r}"
        )
    return values


def ramp_rates(start: float, factor: float, most: float) -> Iterator[float]:
    """``start``, ``start * factor``, ... up to ``most`` (rounded to whole requests/s)."""
    if not (start > 0 and factor > 1 and most >= start):
        raise ValueError(
            f"the ramp needs --ramp-from > 0, --ramp-factor > 1 and --ramp-max >= --ramp-from; "
            f"got {start}, {factor}, {most}"
        )
    rate = start
    while rate <= most:
        yield float(round(rate))
        rate *= factor


def followed(row: dict[str, Any], follow: float, max_p99_ms: float) -> bool:
    """Whether a rate stage's service kept up: answered rate, no failure, p99 in criterion."""
    achieved = row.get("achieved_rps") or 0.0
    return (
        achieved >= follow * row["offered_rps"]
        and row["failures"] == 0
        and (row["http_p99_ms"] or 0.0) <= max_p99_ms
    )


def why_not(row: dict[str, Any], follow: float, max_p99_ms: float) -> str:
    """Which criterion a ramp stage broke (for the report)."""
    reasons = []
    achieved = row.get("achieved_rps") or 0.0
    if achieved < follow * row["offered_rps"]:
        reasons.append(f"answered {achieved:,.0f} of {row['offered_rps']:,.0f} req/s offered")
    if row["failures"]:
        reasons.append(f"{row['failures']} failed requests")
    if (row["http_p99_ms"] or 0.0) > max_p99_ms:
        reasons.append(f"HTTP p99 {row['http_p99_ms']:,.0f} ms > {max_p99_ms:,.0f}")
    return "; ".join(reasons) or "none"


def find_saturation(
    args: argparse.Namespace, run: Callable[[Stage], dict[str, Any]]
) -> dict[str, Any]:
    """The ramp: rate stages, each ``--ramp-factor`` above the last, until one is not
    followed; the saturation rate is the last followed stage's achieved rate.

    A stage that breaks is run once more before the ramp stops: on a machine shared with other
    work, a burst of someone else's jobs can break one short stage (the rerun is in the report).
    """
    stages: list[dict[str, Any]] = []
    last_good: dict[str, Any] | None = None
    why = f"followed up to --ramp-max {args.ramp_max:g}: the saturation rate is at least that"
    for rate in ramp_rates(args.ramp_from, args.ramp_factor, args.ramp_max):
        for prefix in ("ramp", "ramp-again"):
            row = run(Stage.of_rate(rate, args.ramp_time, hold_s=args.hold_s, prefix=prefix))
            stages.append(row)
            if followed(row, args.follow, args.max_p99_ms):
                break
        else:
            broke = why_not(row, args.follow, args.max_p99_ms)
            why = f"the {rate:g} req/s stage broke twice: {broke}"
            break
        last_good = row
    if last_good is None:
        raise SystemExit(
            f"the first ramp stage ({args.ramp_from:g} req/s) was not followed ({why}); "
            f"start lower with --ramp-from"
        )
    return {"rate": last_good["achieved_rps"], "why": why, "stages": stages}


def fraction_stages(args: argparse.Namespace, saturation: float) -> list[Stage]:
    return [
        Stage.of_rate(round(saturation * f, 1), args.run_time, hold_s=args.hold_s, fraction=f)
        for f in args.fractions
    ]


def add_load_arguments(p: argparse.ArgumentParser) -> None:
    """``run.py``'s choice of load (users, rates or fractions) and the ramp's options."""
    load = p.add_mutually_exclusive_group()
    load.add_argument("--users", type=user_counts, default=None, help="users per stage (50)")
    load.add_argument(
        "--rate",
        type=lambda t: positive_floats(t, "--rate", most=20_000),
        default=None,
        help="offered requests/s per stage, paced (constant load)",
    )
    load.add_argument(
        "--fractions",
        type=lambda t: positive_floats(t, "--fractions", most=1.5),
        default=None,
        help="find the saturation rate, then one stage at each fraction of it (0.01,0.5)",
    )
    p.add_argument(
        "--saturation",
        type=float,
        default=None,
        help="with --fractions: this saturation rate (req/s) instead of a ramp to find it",
    )
    p.add_argument("--ramp-from", type=float, default=100.0, help="first ramp rate (req/s)")
    p.add_argument("--ramp-factor", type=float, default=1.3, help="ramp: next rate / rate")
    p.add_argument("--ramp-max", type=float, default=3000.0, help="ramp: highest rate tried")
    p.add_argument("--ramp-time", default="15s", help="ramp: length of each of its stages")
    p.add_argument(
        "--follow",
        type=float,
        default=0.95,
        help="ramp: a stage is followed when it answers this share of the offered rate",
    )
    p.add_argument(
        "--hold-s",
        type=float,
        default=0.5,
        help="rate stages: users = rate x this (the answer time they can absorb)",
    )


def check_load_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.users is None and args.rate is None and args.fractions is None:
        args.users = [50]  # the default load
    if args.saturation is not None and args.fractions is None:
        p.error("--saturation goes with --fractions")
    if not 0 < args.follow <= 1:
        p.error(f"--follow must be in (0, 1], got {args.follow}")
    try:
        seconds_of(args.ramp_time)
        list(ramp_rates(args.ramp_from, args.ramp_factor, args.ramp_max))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        p.error(str(exc))
