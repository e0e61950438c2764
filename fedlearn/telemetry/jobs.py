"""``/metrics`` on a Celery worker: ``celery -A fedlearn.jobs.app worker --metrics-port 9102``.

``install(app)`` adds the ``--metrics-port`` and ``--metrics-host`` options to ``celery
worker`` and a bootstep that serves Prometheus metrics from the worker's *main* process:

- the aggregation rounds, read from the store at scrape time (``StoreCollector``): duration,
  users, events and clipped fraction of the latest published round, when the latest round of
  each outcome ended, the current base version. Read from Redis, they are right whichever pool
  process (or which worker) ran the round's tasks;
- the main process's CPU and memory (``ProcessCollector``);
- with ``PROMETHEUS_MULTIPROC_DIR`` set, the samples the pool processes wrote there.

Why a bootstep in the main process and not ``start_http_server`` in ``worker_process_init``:
that signal fires in every prefork child, so ``--concurrency 2`` would bind the port twice,
and it does not fire at all for ``--pool solo`` or ``threads``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, bootsteps
from click import IntRange, Option
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from fedlearn.store import Store
from fedlearn.telemetry.collector import StoreCollector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def registry_for(store: Store) -> CollectorRegistry:
    """The registry a worker serves: rounds from ``store``, this process, pool samples."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(store.telemetry, shards=False, rounds=True, ope=store.ope))
    ProcessCollector(registry=registry)
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)
    return registry


class MetricsServer(bootsteps.StartStopStep):
    """Serves ``/metrics`` on ``--metrics-host:--metrics-port`` while the worker runs."""

    def __init__(
        self,
        parent: Any,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        **options: Any,
    ) -> None:
        super().__init__(parent, **options)
        self.port = metrics_port
        self.host = metrics_host
        self.server: Any = None
        self.store: Store | None = None

    def start(self, worker: Any) -> None:
        if self.port is None:
            return
        settings = worker.app.conf.fedlearn_settings
        self.store = Store.from_url(settings.redis_url, settings.n_shards)
        self.server, _ = start_http_server(
            self.port, addr=self.host, registry=registry_for(self.store)
        )
        log.info("metrics on http://%s:%d/metrics", self.host, self.server.server_port)

    def stop(self, worker: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.store is not None:
            self.store.close()
            self.store = None


def install(app: Celery) -> None:
    """Give ``celery worker`` of ``app`` the metrics options and server. Call it once, where
    the app is defined."""
    app.user_options["worker"].add(
        Option(
            ("--metrics-port",),
            type=IntRange(0, 65535),
            default=None,
            help="Serve Prometheus metrics on this port (0 picks a free one).",
        )
    )
    app.user_options["worker"].add(
        Option(
            ("--metrics-host",),
            default="127.0.0.1",
            show_default=True,
            help="Address of the metrics server (0.0.0.0 in a container).",
        )
    )
    app.steps["worker"].add(MetricsServer)
