"""Prometheus metrics of the API: requests by route and status, latency, events by outcome.

Each app gets its own registry (two apps in one test process do not collide). Under gunicorn
with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder *before* the
workers start (``run_gunicorn`` does): every worker then writes its samples there and
``/metrics`` sums them over all workers, whichever worker answers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"  # the route label of 404s: the raw path would explode cardinality


class Metrics:
    """The API's counters and histograms on one registry."""

    def __init__(self, collectors: Sequence[Collector] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Collectors read their values at scrape time (stream lengths, lag, rounds): they are
        # not per worker, so in multiprocess mode they join the fresh registry once.
        self.collectors = list(collectors)
        for collector in self.collectors:
            self.registry.register(collector)
        self.requests = Counter(
            "fedlearn_http_requests_total",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fedlearn_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.events_accepted = Counter(
            "fedlearn_events_accepted_total",
            "Events appended to the shard streams",
            registry=self.registry,
        )
        self.events_duplicates = Counter(
            "fedlearn_events_duplicates_total",
            "Events received again (same event_id) and skipped",
            registry=self.registry,
        )
        self.events_rejected = Counter(
            "fedlearn_events_rejected_total",
            "Events refused, by reason (invalid, too_many, forbidden, stream_full)",
            ["reason"],
            registry=self.registry,
        )
        self.shown_items = Counter(
            "fedlearn_rank_shown_items_total",
            "Items rank put in a slot, by exploration policy kind",
            ["policy"],
            registry=self.registry,
        )
        self.explored_items = Counter(
            "fedlearn_rank_explored_items_total",
            "Items rank put in a slot while a better-scored one was left (explored), by policy",
            ["policy"],
            registry=self.registry,
        )

        self.unreadable_records = Counter(
            "fedlearn_unreadable_records",
            "Users' stored delta records that could not be read (the base was served)",
            registry=self.registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def observe_ranking(self, policy: str, shown: int, explored: int) -> None:
        self.shown_items.labels(policy).inc(shown)
        self.explored_items.labels(policy).inc(explored)

    def ranking_counts(self) -> dict[str, dict[str, float]]:
        """Items rank showed and explored, by policy kind: this process's counters, or every
        worker's summed in multiprocess mode (as ``/metrics`` shows them)."""
        if os.environ.get(MULTIPROC_ENV):
            families = list(MultiProcessCollector(None).collect())
        else:
            families = [*self.shown_items.collect(), *self.explored_items.collect()]
        fields = {"fedlearn_rank_shown_items_total": "shown",
                  "fedlearn_rank_explored_items_total": "explored"}  # fmt: skip
        counts: dict[str, dict[str, float]] = {}
        for family in families:
            for sample in family.samples:
                if sample.name in fields:
                    policy = counts.setdefault(sample.labels["policy"], {"shown": 0, "explored": 0})
                    policy[fields[sample.name]] += sample.value
        return counts

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every metric (summed over workers in multiprocess mode)."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            for collector in self.collectors:
                registry.register(collector)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
