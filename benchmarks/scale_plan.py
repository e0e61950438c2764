"""The capacity model: lines fitted to the measured rounds, and the 10M-user plan from them.

Pure arithmetic over what ``bench_scale.py`` measured; every assumption of the plan is a
named constant below and printed with the plan, so docs/SCALE.md can quote it and the lead
can plug in other figures (shard count ``S``, rows a session fetches ``R``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# The plan's assumptions (the scenario, and our own where it says nothing).
DAILY_USERS = 10_000_000
EVENTS_PER_USER_DAY = 50
PEAK_FACTOR = 10
ITEMS = 1_000_000
ROUND_EVERY_S = 3600
BATCH = 10  # events per POST /v1/events (the browser client's batch in the load test)
UTILIZATION = 0.6  # cores and Redis nodes planned at 60 % busy, leaving room for bursts
PEAK_HOUR_USERS = min(DAILY_USERS, DAILY_USERS // 24 * PEAK_FACTOR)  # a round's participants
REDIS_NODE_GB = 25.0  # usable memory planned per Redis node (a 32 GB machine)
DEDUPE_WINDOW_S = 24 * 3600  # the default FEDLEARN_DEDUPE_WINDOW_S
K = 10

NOTES_TTL_DAYS = 7  # aggregate/promote.py NOTES_TTL_S: a participant's rebase note lives 7 days
STEPS = ("map", "reduce", "promote")
FITTED = tuple(f"{step}_{what}" for step in STEPS
               for what in ("py_cpu_s", "redis_cpu_s", "net_bytes"))  # fmt: skip
PER_USER = ("redis_bytes_per_user", "snapshot_bytes_per_user", "rebase_entry_bytes_per_user",
            "rebase_note_bytes_per_user")  # fmt: skip


def fit_lines(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per figure: y = a + b * users by least squares, and the largest relative residual."""
    users = np.array([r["users"] for r in rows], dtype=float)
    out = {}
    for name in FITTED:
        y = np.array([float(r[name]) for r in rows])
        b, a = np.polyfit(users, y, 1)
        worst = float(np.max(np.abs(a + b * users - y) / np.maximum(np.abs(y), 1e-9)))
        out[name] = {"a": float(a), "b": float(b), "worst_residual": worst}
    return out


def at(fit: dict[str, dict[str, float]], name: str, users: float) -> float:
    line = fit[name]
    return line["a"] + line["b"] * users


def fit_table(fit: dict[str, dict[str, float]]) -> str:
    lines = ["| figure | a (fixed) | b (per user) | per 1M users | worst residual |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, line in fit.items():
        lines.append(
            f"| {name} | {line['a']:.3g} | {line['b']:.3g} | {line['b'] * 1e6:,.3g} | "
            f"{100 * line['worst_residual']:.0f} % |"
        )
    return "\n".join(lines)


def _round_plan(fit: dict[str, dict[str, float]], users: float, workers: int) -> dict[str, float]:
    """A round's steps at ``users`` participants with ``workers`` map workers: map runs in
    parallel over shards (one task each), reduce and promote (one task each) do not."""
    out = {f"{step}_s": at(fit, f"{step}_py_cpu_s", users) for step in STEPS}
    out["map_s"] /= workers
    out["total_s"] = sum(out[f"{step}_s"] for step in STEPS)
    out["redis_cpu_s"] = sum(at(fit, f"{step}_redis_cpu_s", users) for step in STEPS)
    out["net_bytes"] = sum(at(fit, f"{step}_net_bytes", users) for step in STEPS)
    return out


def state_bytes(units: dict[str, Any]) -> float:
    """A user's lasting Redis bytes: the delta record a trainer wrote after a day's 50 events,
    and its snapshot (the same blob, in the shard's snapshot hash). The synthetic deltas of
    the rounds are smaller (20..50 rows), so their rebase entries and notes, measured per
    participant, are a lower bound for such users."""
    return units["delta_redis_bytes_per_user"] + units["delta_blob_bytes_per_user"]


def per_user(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The per-user byte figures, as the median over the sizes measured."""
    return {name: float(np.median([r[name] for r in rows])) for name in PER_USER}


def plan_tables(
    units: dict[str, Any] | None,
    fit: dict[str, dict[str, float]],
    rows: list[dict[str, Any]],
    *,
    base_bytes: int = 0,
) -> str:
    """The fitted lines, the plan for the scenario above, and what saturates first."""
    text = ["Fitted (y = a + b * users, least squares over the sizes measured; CPU in s, "
            "net in bytes):", "", fit_table(fit), ""]  # fmt: skip
    rnd = _round_plan(fit, PEAK_HOUR_USERS, 16)
    text += [
        f"A round of {PEAK_HOUR_USERS:,} participants (the peak hour's users) with 16 map "
        f"workers: map {rnd['map_s']:,.0f} s + reduce {rnd['reduce_s']:,.0f} s + promote "
        f"{rnd['promote_s']:,.0f} s = {rnd['total_s']:,.0f} s of the {ROUND_EVERY_S} s "
        f"between rounds; Redis CPU {rnd['redis_cpu_s']:,.0f} s, Redis traffic "
        f"{rnd['net_bytes'] / 2**30:,.1f} GB. Promote alone fits an hour up to "
        f"{ROUND_EVERY_S / fit['promote_py_cpu_s']['b']:,.0f} participants.",
        "",
    ]
    if units is None:
        return "\n".join(text)
    b = per_user(rows)
    per_day = DAILY_USERS * EVENTS_PER_USER_DAY
    mean_rate = per_day / 86400
    peak = mean_rate * PEAK_FACTOR
    api_cores = peak * units["api_cpu_us_per_event"] / 1e6
    trainer_cores = peak * units["trainer_cpu_us_per_event"] / 1e6
    redis_event_us = units["redis_ingest_cpu_us_per_event"] + units["redis_apply_cpu_us_per_event"]
    redis_cores = peak * redis_event_us / 1e6 + rnd["redis_cpu_s"] / ROUND_EVERY_S
    gb = {
        "deltas and snapshots": DAILY_USERS * state_bytes(units),
        "rebase notes (7 days)": DAILY_USERS * NOTES_TTL_DAYS * b["rebase_note_bytes_per_user"],
        "one round's rebase entries": PEAK_HOUR_USERS * b["rebase_entry_bytes_per_user"],
        "event ids (dedupe, 24 h)": per_day * DEDUPE_WINDOW_S / 86400
        * units["dedupe_bytes_per_event"],
        "a day of base versions (never pruned)": 86400 / ROUND_EVERY_S * base_bytes,
    }  # fmt: skip
    gb = {k: v / 2**30 for k, v in gb.items()}
    memory_gb = sum(gb.values())
    net_in = peak * (units["body_bytes_per_event"] + units["net_in_bytes_per_event"])
    net_apply = peak * units["net_apply_bytes_per_event"]
    text += [
        f"Plan: {DAILY_USERS:,} daily users x {EVENTS_PER_USER_DAY} events = {per_day:,} "
        f"events/day, mean {mean_rate:,.0f}/s, peak x{PEAK_FACTOR} = {peak:,.0f} events/s "
        f"({peak / BATCH:,.0f} requests/s of {BATCH} events); {ITEMS:,}-item catalog; a round "
        f"every {ROUND_EVERY_S} s over the peak hour's {PEAK_HOUR_USERS:,} users; parts "
        f"planned at {100 * UTILIZATION:.0f} % busy.",
        "",
        "| part | work at peak | unit cost (measured) | planned |",
        "|---|---|---|---|",
        f"| API (gunicorn workers) | {api_cores:,.1f} cores | "
        f"{units['api_cpu_us_per_event']:.0f} us CPU per event | "
        f"{math.ceil(api_cores / UTILIZATION)} cores |",
        f"| trainers | {trainer_cores:,.1f} cores | {units['trainer_cpu_us_per_event']:.0f} us "
        f"per event | {math.ceil(trainer_cores / UTILIZATION)} trainer processes (shards "
        f"S >= trainers) |",
        f"| Redis CPU | {redis_cores:,.2f} cores | {redis_event_us:.1f} us per event (ingest "
        f"{units['redis_ingest_cpu_us_per_event']:.1f} + apply "
        f"{units['redis_apply_cpu_us_per_event']:.1f}) + rounds "
        f"{rnd['redis_cpu_s'] / ROUND_EVERY_S:.2f} core | "
        f"{math.ceil(redis_cores / UTILIZATION)} nodes by CPU |",
        f"| Redis memory | {memory_gb:,.0f} GB: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in gb.items())
        + f" | {state_bytes(units):,.0f} B per user (delta record and snapshot); note"
        f" {b['rebase_note_bytes_per_user']:,.0f} B and entry "
        f"{b['rebase_entry_bytes_per_user']:,.0f} B per participant; "
        f"{units['dedupe_bytes_per_event']:.0f} B per event id | "
        f"{math.ceil(memory_gb / REDIS_NODE_GB)} nodes of {REDIS_NODE_GB:.0f} GB |",
        f"| Celery (rounds) | {rnd['total_s']:,.0f} s per round with 16 map workers | map "
        f"{fit['map_py_cpu_s']['b'] * 1e6:,.0f}, reduce {fit['reduce_py_cpu_s']['b'] * 1e6:,.0f}"
        f", promote {fit['promote_py_cpu_s']['b'] * 1e6:,.0f} CPU-s per 1M users | 16 + 1 |",
        f"| network | {8 * net_in / 1e9:,.2f} Gbit/s in (client->API->Redis), "
        f"{8 * net_apply / 1e9:,.2f} Gbit/s Redis<->trainers, "
        f"{rnd['net_bytes'] / 2**30:,.1f} GB per round | "
        f"{units['body_bytes_per_event']:.0f} + {units['net_in_bytes_per_event']:.0f} "
        f"+ {units['net_apply_bytes_per_event']:.0f} B per event | - |",
        "",
        *ceilings(units, fit, b),
    ]
    return "\n".join(text)


def ceilings(units: dict[str, Any], fit: dict[str, dict[str, float]], b: dict[str, float]) -> list:
    """Daily users at which each part of today's shape (one Redis node of REDIS_NODE_GB, 8
    shards so at most 8 trainers, one promote task per round) reaches its limit, with the
    scenario's events per user, peak factor and peak-hour share: the smallest saturates
    first."""
    peak_per_user = EVENTS_PER_USER_DAY * PEAK_FACTOR / 86400  # events/s per daily user
    redis_us = units["redis_ingest_cpu_us_per_event"] + units["redis_apply_cpu_us_per_event"]
    memory_per_user = (state_bytes(units)
                       + NOTES_TTL_DAYS * b["rebase_note_bytes_per_user"]
                       + EVENTS_PER_USER_DAY * units["dedupe_bytes_per_event"]
                       + PEAK_FACTOR / 24 * b["rebase_entry_bytes_per_user"])  # fmt: skip
    hour_share = PEAK_HOUR_USERS / DAILY_USERS  # a round's participants per daily user
    limits = {
        "one Redis node's memory": REDIS_NODE_GB * 2**30 / memory_per_user,
        "one Redis node's CPU (one core)": UTILIZATION / (peak_per_user * redis_us * 1e-6),
        "8 trainers (8 shards), one core each": 8
        * UTILIZATION / (peak_per_user * units["trainer_cpu_us_per_event"] * 1e-6),
        "one promote task per hourly round": ROUND_EVERY_S
        / (fit["promote_py_cpu_s"]["b"] * hour_share),
    }  # fmt: skip
    lines = [
        "| part (today's shape) | saturates at daily users | per daily user |",
        "|---|---|---|",
    ]
    for name, users in sorted(limits.items(), key=lambda kv: kv[1]):
        per = (f"{memory_per_user:,.0f} B" if "memory" in name
               else f"{hour_share:.2f} participants per round" if "promote" in name
               else f"{peak_per_user * 1e3:.2f} events/s per 1,000 users at peak")  # fmt: skip
        lines.append(f"| {name} | {users:,.0f} | {per} |")
    return lines
