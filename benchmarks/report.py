"""The suite's figures as one table: ours, the ceiling or reference beside it, the ratio, the aim.

A section that was not run has no rows; a section that failed has one row saying so.
"""

from __future__ import annotations

import math
from typing import Any

from suite import Row

# Every row key the full suite produces, in table order (rounds add one row per size).
KEYS = (
    "update",
    "trainer",
    "trainer_nolog",
    "trainer_cpu",
    "trainer_procs_1",
    "trainer_procs_2",
    "cold_start",
    "ingest",
    "ingest_p99",
    "fetch_p50",
    "fetch_p99",
    "fresh_p50",
    "fresh_p99",
    "round",
    "memory",
    "xadd",
    "read_ack",
)


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(ours: float | None, ref: float | None, percent: bool = True) -> str:
    if not ours or not ref:
        return "-"
    return f"{ours / ref:.0%}" if percent else f"{ours / ref:.1f}x"


def rows(raw: dict[str, Any], errors: dict[str, str]) -> list[Row]:
    ceil = raw.get("ceilings", {})
    bare_in = ceil.get("ingest", {})
    bare_get = ceil.get("get", {})
    read_ack = ceil.get("read_ack", {}).get("events_per_s")
    repeat = raw.get("sizes", {}).get("repeat", 1)
    out: list[Row] = []
    if "update" in raw:
        u = raw["update"]
        ours, river = u["ours"]["events_per_s"], u["river"]["events_per_s"]
        out.append(
            Row(
                "update",
                f"online update, events/s, 1 core, best of {repeat} ({u['stream']})",
                _n(ours),
                f"{_n(river)} River FM learn_one",
                _ratio(ours, river, False),
                "faster than River",
            )
        )
    if "trainer" in raw:
        t = raw["trainer"]
        out.append(
            Row(
                "trainer",
                f"trainer end to end (read, test-then-train, commit + ack, event log to disk), "
                f"events/s, 1 trainer, batch {t['batch']}",
                _n(t["events_per_s"]),
                f"{_n(read_ack)} XREADGROUP+XACK",
                _ratio(t["events_per_s"], read_ack),
                ">= 100,000 per core",
            )
        )
        out.append(
            Row(
                "trainer_nolog",
                f"trainer without its event log drains (same run; they took "
                f"{t['eventlog_s']:.1f} s of {t['seconds']:.1f} s)",
                _n(t["events_per_s_without_log"]),
                f"{_n(read_ack)} XREADGROUP+XACK",
                _ratio(t["events_per_s_without_log"], read_ack),
                ">= 100,000 per core",
            )
        )
        redis_per_100k = 1e5 * t["redis_cpu_s"] / max(1, t["events"])
        out.append(
            Row(
                "trainer_cpu",
                "trainer: events per trainer CPU-second (Redis CPU-s per 100k events)",
                f"{_n(t['events_per_cpu_s'])} ({redis_per_100k:.2f} s)",
                aim=">= 100,000",
            )
        )
        for p in t.get("processes", []):
            out.append(
                Row(
                    f"trainer_procs_{p['trainers']}",
                    f"{p['trainers']} `fedlearn worker` process(es) on the same {p['shards']} "
                    f"shards: events/s (events per trainer CPU-second)",
                    f"{_n(p['events_per_s'])} ({_n(p['events_per_trainer_cpu_s'])})",
                    f"{_n(read_ack)} XREADGROUP+XACK",
                    _ratio(p["events_per_s"], read_ack),
                    ">= 60% of the ceiling",
                )
            )
        if "cold_start" in t:
            c = t["cold_start"]
            out.append(
                Row(
                    "cold_start",
                    "compiled update's cold start, s (import + first call; with numba's cache)",
                    f"{c['with_cache_s']:.2f}",
                    f"{c['without_cache_s']:.2f} without the cache",
                )
            )
    if "http" in raw:
        h = raw["http"]
        i, f, fr = h["ingest"], h["fetch"], h["freshness"]
        conns = raw.get("sizes", {}).get("connections", "?")
        out += [
            Row(
                "ingest",
                f"HTTP ingest, events/s (POST /v1/events, 50 per batch, {conns} connections)",
                _n(i["events_per_s"]),
                f"{_n(bare_in.get('events_per_s'))} bare Flask+Redis",
                _ratio(i["events_per_s"], bare_in.get("events_per_s")),
                ">= 60% of bare",
            ),
            Row(
                "ingest_p99",
                f"HTTP ingest p99, ms ({conns} connections)",
                _n(i["p99_ms"], 1),
                f"{_n(bare_in.get('p99_ms'), 1)} bare",
                _ratio(i["p99_ms"], bare_in.get("p99_ms")),
            ),
            Row(
                "fetch_p50",
                f"model fetch p50, ms (GET model, 1 connection, {f['events_per_user']}"
                f"-event delta, {_n(f['body_bytes'])} B JSON)",
                _n(f["p50_ms"], 2),
                f"{_n(bare_get.get('p50_ms'), 2)} bare GET 2 KB",
                _ratio(f["p50_ms"], bare_get.get("p50_ms")),
            ),
            Row(
                "fetch_p99",
                "model fetch p99, ms (1 connection)",
                _n(f["p99_ms"], 2),
                f"{_n(bare_get.get('p99_ms'), 2)} bare GET 2 KB",
                _ratio(f["p99_ms"], bare_get.get("p99_ms")),
            ),
            Row(
                "fresh_p50",
                f"freshness p50, ms (202 -> visible in GET model; "
                f"{_n(fr['load_events_per_s'])} events/s of load, {fr['probes']} probes)",
                _n(fr["p50_ms"], 1),
                f"{_n(fr['trainer_p50_ms'], 1)} trainer: stream id -> commit",
            ),
            Row(
                "fresh_p99",
                "freshness p99, ms (same run)",
                _n(fr["p99_ms"], 1),
                f"{_n(fr['trainer_p99_ms'], 1)} trainer: stream id -> commit",
            ),
        ]
    for r in raw.get("round", {}).get("rounds", []):
        out.append(
            Row(
                "round",
                f"aggregation round, s, median of {repeat} ({r['users']:,} users, "
                f"{r['strategy']}, 2 Celery workers)",
                _n(r["round_s"], 2),
                f"{1000 * r['round_s'] / r['users']:.3f} s per 1k users",
            )
        )
    if "trainer" in raw and raw["trainer"]["memory"].get("users"):
        m = raw["trainer"]["memory"]
        out.append(
            Row(
                "memory",
                f"bytes per user in Redis (delta hash, MEMORY USAGE; "
                f"{m['events_mean']:.0f} events/user on average, {m['users']:,} users)",
                f"{_n(m['bytes_mean'])} mean, {_n(m['bytes_p50'])} p50",
                f"{_n(m['bytes_p99'])} p99",
            )
        )
    if ceil:
        out.append(
            Row(
                "xadd",
                "ceiling: redis-py pipelined XADD, events/s (50 per pipeline)",
                "-",
                _n(ceil["xadd"]["events_per_s"]),
            )
        )
        out.append(
            Row("read_ack", "ceiling: XREADGROUP (1000) + XACK, entries/s", "-", _n(read_ack))
        )
    for section, error in errors.items():
        out.append(Row(f"error:{section}", f"{section} FAILED", error[:120]))
    return out


def table(table_rows: list[Row]) -> str:
    """A Markdown table (readable in a terminal, pasted as is into BENCHMARKS.md)."""
    head = ("figure", "ours", "ceiling / reference", "ours / ref", "aim")
    cells = [head] + [(r.figure, r.ours, r.reference, r.ratio, r.aim) for r in table_rows]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "---|" * len(head))
    return "\n".join(lines)


def machine_line(raw: dict[str, Any]) -> str:
    m = raw["machine"]
    before = ", ".join(f"{x:.1f}" for x in m["load_before"])
    after = ", ".join(f"{x:.1f}" for x in m.get("load_after", m["load_before"]))
    return (
        f"machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, load generator on the "
        f"same machine; load average {before} before, {after} after; suite took "
        f"{raw.get('seconds', 0):.0f} s"
    )
