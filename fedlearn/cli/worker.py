"""``fedlearn worker``: a stream trainer process.

It fails fast: any error the trainer cannot handle ends the process with status 1 and one
line saying why (its supervisor, ``fedlearn up`` or the container runtime, restarts it; the
new process redoes the pending entries, so nothing is lost or applied twice).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

from fedlearn.cli.common import default_of, fail_with_config_errors, service_store
from fedlearn.config import Settings
from fedlearn.devtools.runtime import service_settings
from fedlearn.model import Base
from fedlearn.store import Store
from fedlearn.telemetry.logs import configure_logging
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.drift import DriftMonitor, DriftSettings
from fedlearn.trainer.eventlog import EventLogWriter
from fedlearn.trainer.trainer import Trainer, TrainerConfig


def drift_monitor(store: Store, settings: Settings, name: str) -> DriftMonitor | None:
    """The trainer's drift detection and its actions, as the settings say (None: off)."""
    if not settings.drift_detection:
        return None
    from fedlearn.jobs.drift import DriftActions

    detectors = DriftSettings(chunk_events=settings.drift_chunk_events, delta=settings.drift_delta)
    return DriftMonitor(
        store.drift, trainer=name, settings=detectors, act=DriftActions(store, settings)
    )


@click.command()
@click.option(
    "--name",
    default=default_of(TrainerConfig, "name"),
    show_default=True,
    help="Shown in leases and logs.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=default_of(TrainerConfig, "batch_size"),
    show_default=True,
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on HOST:PORT (0 picks a free port).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address of the metrics server (0.0.0.0 in a container, for Prometheus to scrape).",
)
@click.option(
    "--eventlog",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the durable event log (default: DATA_DIR/eventlog).",
)
@fail_with_config_errors
def worker(
    name: str, batch_size: int, metrics_port: int | None, metrics_host: str, eventlog: Path | None
) -> None:
    """Train users' clones from the shard streams (owns a fair share of the shards)."""
    settings = service_settings()
    configure_logging(settings.log_format, settings.log_level)
    log = logging.getLogger("fedlearn.worker")
    store = service_store(
        settings, stream_maxlen=settings.stream_maxlen, dedupe_window_s=settings.dedupe_window_s
    )
    if metrics_port is not None:
        from prometheus_client import start_http_server

        server, _ = start_http_server(metrics_port, addr=metrics_host)
        log.info("metrics on http://%s:%d/metrics", metrics_host, server.server_port)

    def clone_settings(base: Base) -> CloneSettings:
        return CloneSettings(**settings.clone_hyper(base.hyper))

    writer = EventLogWriter(store, eventlog or settings.data_dir / "eventlog")
    config = TrainerConfig(
        name=name,
        batch_size=batch_size,
        lease_ttl_ms=settings.trainer_lease_ttl_ms,
        gating=settings.gate,
    )
    trainer = Trainer(
        store, clone_settings, config, eventlog=writer, drift=drift_monitor(store, settings, name)
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("trainer %s started on %d shards", trainer.owner, settings.n_shards)
    try:
        trainer.run(stop)
    except Exception as exc:
        log.error(
            "trainer %s failed after applying %d events: %s: %s; exiting with status 1",
            trainer.owner, trainer.applied_total, type(exc).__name__, exc,
        )  # fmt: skip
        log.info("where it failed", exc_info=exc)
        sys.exit(1)
    log.info("trainer %s stopped after applying %d events", trainer.owner, trainer.applied_total)
