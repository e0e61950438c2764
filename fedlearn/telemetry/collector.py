"""Prometheus metrics read from the store at scrape time: per-shard stream state, the
latest aggregation rounds and the latest served-vs-greedy estimate.

They describe shared state, not one process: read from Redis, they are right whichever trainer
or Celery worker did the work, so the API's ``/metrics`` (and a Celery worker's) can serve them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fedlearn.aggregate.round import RoundStatus
from fedlearn.store.bases import BaseInfo
from fedlearn.store.ope import OpeEstimates
from fedlearn.store.telemetry import ShardStats, Telemetry
from fedlearn.telemetry.dashboard import RoundRow, round_row


class StoreCollector(Collector):
    """Prometheus metrics read from the store at scrape time: per-shard stream state and the
    latest aggregation rounds. Register it on the registry that serves ``/metrics``.

    ``shards``/``rounds`` pick what to read (a Celery worker needs only the rounds); ``ope``,
    when given, adds the dashboard's served-vs-greedy estimate. A store
    that does not answer yields no samples rather than failing the whole scrape.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        shards: bool = True,
        rounds: bool = True,
        recent: int = 50,
        ope: OpeEstimates | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.shards = shards
        self.rounds = rounds
        self.recent = recent
        self.ope = ope

    def describe(self) -> list[Any]:
        return []  # collected lazily: describing would read Redis at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            if self.shards:
                yield from _shard_families(self.telemetry.shard_stats())
            if self.rounds:
                yield from _round_families(
                    [round_row(r) for r in self.telemetry.recent_rounds(self.recent)],
                    *self.telemetry.base_tail(1),
                )
            if self.ope is not None:
                yield from _ope_families(self.ope.latest())
        except redis.RedisError:
            return


def _shard_families(stats: Sequence[ShardStats]) -> Iterator[GaugeMetricFamily]:
    specs = (
        ("fedlearn_stream_length", "Entries in the shard's stream (XLEN)", "length"),
        ("fedlearn_stream_pending", "Entries read by a trainer and not yet committed", "pending"),
        (
            "fedlearn_stream_lag_events",
            "Entries not yet read by the trainers (exact on Redis >= 7; on 6.2 it includes "
            "acknowledged entries awaiting trim)",
            "lag_events",
        ),
        (
            "fedlearn_stream_lag_seconds",
            "Age of the oldest entry not yet read by the trainers (0: none waits)",
            "lag_seconds",
        ),
        ("fedlearn_shard_users", "Users with a delta in the shard", "users"),
    )
    for name, help_text, field in specs:
        family = GaugeMetricFamily(name, help_text, labels=["shard"])
        for row in stats:
            family.add_metric([str(row.shard)], getattr(row, field))
        yield family
    owned = GaugeMetricFamily(
        "fedlearn_shard_owned", "1 when a trainer holds the shard's lease", labels=["shard"]
    )
    for row in stats:
        owned.add_metric([str(row.shard)], 1.0 if row.holder else 0.0)
    yield owned


def _round_families(
    rows: Sequence[RoundRow], current: str | None, tail: Sequence[BaseInfo]
) -> Iterator[GaugeMetricFamily]:
    by_status = GaugeMetricFamily(
        "fedlearn_rounds_recent",
        "Aggregation rounds among the latest ones recorded, by status",
        labels=["status"],
    )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    for status in sorted(RoundStatus):
        by_status.add_metric([status], counts.get(status, 0))
    yield by_status
    last_end = GaugeMetricFamily(
        "fedlearn_round_last_end_timestamp_seconds",
        "When the latest round with this outcome ended (unix time)",
        labels=["status"],
    )
    seen: set[str] = set()
    for row in rows:  # newest first
        if row.status in seen or row.finished_at is None:
            continue
        seen.add(row.status)
        last_end.add_metric([row.status], row.finished_at)
    yield last_end
    published = next(
        (r for r in rows if r.status in (RoundStatus.PUBLISHED, RoundStatus.DONE)), None
    )
    figures = (
        ("fedlearn_round_duration_seconds", "Duration of the latest published round", "duration"),
        ("fedlearn_round_users", "Users who contributed to the latest published round", "users"),
        ("fedlearn_round_events", "Events behind the latest published round", "events"),
        (
            "fedlearn_round_clipped_fraction",
            "Share of the latest published round's users whose change was clipped",
            "clipped",
        ),
    )
    values = {}
    if published is not None:
        values = {
            "duration": published.duration_s,
            "users": published.users,
            "events": published.events,
            "clipped": published.clipped_fraction,
        }
    for name, help_text, field in figures:
        family = GaugeMetricFamily(name, help_text)
        if values.get(field) is not None:
            family.add_metric([], float(values[field]))
        yield family
    # An info metric's value is 1 (Prometheus convention); the time is a gauge of its own.
    version = GaugeMetricFamily(
        "fedlearn_base_version_info", "The current base version (label)", labels=["version"]
    )
    published = GaugeMetricFamily(
        "fedlearn_base_published_timestamp_seconds",
        "When the current base version was published (unix time)",
    )
    if current is not None:
        version.add_metric([current], 1.0)
        created = next((b.created_at for b in tail if b.version == current), None)
        if created is not None:
            published.add_metric([], created)
    yield version
    yield published


def _ope_families(latest: Mapping[str, Any] | None) -> Iterator[GaugeMetricFamily]:
    """The served policy's and greedy's estimated top-slot click rate (with the interval's
    bounds), the decisions behind each, and when they were estimated; no samples before the
    first estimate, none for a policy the log cannot estimate."""
    ratio = GaugeMetricFamily(
        "fedlearn_ope_click_ratio",
        "Estimated top-slot click rate on the newest logged decisions, by policy (served, "
        "greedy) and bound (estimate, low, high of the 95 % interval)",
        labels=["policy", "bound"],
    )
    decisions = GaugeMetricFamily(
        "fedlearn_ope_decisions", "Top-slot decisions behind the estimate", labels=["policy"]
    )
    computed = GaugeMetricFamily(
        "fedlearn_ope_computed_timestamp_seconds", "When the estimate was computed (unix time)"
    )
    if latest:
        computed.add_metric([], float(latest["computed_at"]))
        for policy in ("served", "greedy"):
            figure = latest.get(policy)
            if not figure:
                continue
            decisions.add_metric([policy], float(figure["n"]))
            for bound, key in (("estimate", "value"), ("low", "low"), ("high", "high")):
                if figure.get(key) is not None:
                    ratio.add_metric([policy, bound], float(figure[key]))
    yield from (ratio, decisions, computed)
