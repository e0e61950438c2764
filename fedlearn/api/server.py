"""Running the API: gunicorn with N workers (production, ``fedlearn api``/``up``), or werkzeug
in a thread (tests, notebooks).

``run_gunicorn`` starts, in the master and before any worker forks, what must exist once: the
embedded Redis when no ``REDIS_URL`` is set, and the Prometheus multiprocess folder when there
are several workers (so ``/metrics`` sums every worker). Each worker then builds its own app
(its own Redis connections: sockets must not cross a fork).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from flask import Flask
from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker
from werkzeug.serving import BaseWSGIServer, make_server

from fedlearn.api.errors import PROBLEM_JSON, Problem
from fedlearn.config import Settings, load_settings
from fedlearn.devtools.lifecycle import Startable
from fedlearn.telemetry.logs import configure_logging, logging_dict

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class EmbeddedGunicorn(BaseApplication):  # type: ignore[misc]
    """gunicorn's documented way to embed it: options in, ``load_app()`` called in each
    worker, after the fork (so each worker opens its own connections). Also the bare
    benchmark app's server (benchmarks/bare_app.py), so both run under the same gunicorn."""

    def __init__(self, load_app: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._load_app = load_app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings:  # an older gunicorn lacks the newest options
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._load_app()


def _worker_app(settings: Settings) -> Flask:
    from fedlearn.api.app import create_app, start_base_warmer  # in the worker, after the fork

    app = create_app(settings)
    start_base_warmer(app)
    return app


def gunicorn_problem(exc: BaseException) -> Problem | None:
    """The problem+json answer for an error gunicorn answers itself, before our app sees the
    request (a request line or headers over its limits); ``None`` for the others."""
    if isinstance(exc, LimitRequestLine):
        return Problem(
            f"the request line (method, path and query) is too long: {exc}; shorten the URL",
            status=414, title="URI Too Long", kind="uri-too-long",
        )  # fmt: skip
    if isinstance(exc, LimitRequestHeaders):
        return Problem(
            f"the request headers are too many or too large: {exc}; send fewer or smaller "
            f"headers",
            status=431, title="Request Header Fields Too Large", kind="headers-too-large",
        )  # fmt: skip
    return None


def _raw_response(problem: Problem) -> bytes:
    body = orjson.dumps(problem.body())
    head = (
        f"HTTP/1.1 {problem.status} {problem.title}\r\nConnection: close\r\n"
        f"Content-Type: {PROBLEM_JSON}\r\nContent-Length: {len(body)}\r\n"
        f"Cache-Control: no-store\r\n\r\n"
    )
    return head.encode("latin-1") + body


class ProblemWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, answering its own limit errors (414, 431) as problem+json,
    like every answer of the app, instead of gunicorn's HTML page."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        problem = gunicorn_problem(exc)
        if problem is None:
            super().handle_error(req, client, addr, exc)
            return
        self.log.warning("refused a request from %s: %s", (addr or ("",))[0], exc)
        try:
            gunicorn_util.write_nonblock(client, _raw_response(problem))
        except OSError:
            self.log.debug("failed to send the %s answer", problem.status)


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _metrics_dir(settings: Settings, workers: int) -> Path | None:
    """The Prometheus multiprocess folder, emptied; set up before prometheus_client loads."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder is None and workers > 1:
        folder = str(settings.data_dir.resolve() / "metrics")
        os.environ[MULTIPROC_ENV] = folder
    if folder is None:
        return None
    if "prometheus_client" in sys.modules and workers > 1:
        log.warning("prometheus_client was imported before %s was set; /metrics may show one "
                    "worker only", MULTIPROC_ENV)  # fmt: skip
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # a previous run's samples would be summed with ours
        stale.unlink()
    return path


def gunicorn_options(*, host: str, port: int, workers: int, threads: int = 4) -> dict[str, Any]:
    """gthread workers: a slow client (no proxy in front, as in the demo) holds a thread, not
    a whole worker. Ours (``ProblemWorker``) answers gunicorn's own errors as problem+json."""
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "fedlearn.api.server.ProblemWorker",
        "threads": threads,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "preload_app": False,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "fedlearn-api",
        # gunicorn >= 24 opens a control socket at one fixed path per machine, so two servers
        # (several services, or tests beside a running one) would fight over it; we don't use it.
        "control_socket_disable": True,
    }


def run_gunicorn(
    settings: Settings | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> None:
    """Serve the API with gunicorn until stopped (SIGTERM/SIGINT); blocks.

    Defaults come from the settings (``FEDLEARN_API_HOST``/``_PORT``/``_WORKERS``). Without
    ``REDIS_URL`` an embedded redis-server is started in ``<data_dir>/redis`` and stopped on
    exit.
    """
    settings = settings if settings is not None else load_settings()
    host = host or settings.api_host
    port = settings.api_port if port is None else port
    workers = workers or settings.api_workers
    options = gunicorn_options(host=host, port=port, workers=workers)
    configure_logging(settings.log_format, settings.log_level)
    options["logconfig_dict"] = logging_dict(settings.log_format, settings.log_level)
    options["loglevel"] = settings.log_level.lower()
    if _metrics_dir(settings, workers) is not None:
        options["child_exit"] = _child_exit
    embedded = None
    if settings.redis_url is None:
        from fedlearn.devtools import EmbeddedRedis

        embedded = EmbeddedRedis(settings.data_dir / "redis").start()
        settings = settings.model_copy(update={"redis_url": embedded.url})
        log.info("started embedded Redis at %s (data in %s)", embedded.url, embedded.data_dir)
    try:
        EmbeddedGunicorn(functools.partial(_worker_app, settings), options).run()
    finally:
        if embedded is not None:
            embedded.stop()


class ThreadedServer(Startable):
    """``app`` served by werkzeug in a background thread, on 127.0.0.1 and a free port.

    For tests and notebooks; production uses :func:`run_gunicorn`. A context manager.
    """

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait for the loop to notice
            name="fedlearn-api",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self._server.server_port}"

    def start(self) -> ThreadedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


if __name__ == "__main__":  # `python -m fedlearn.api.server`
    run_gunicorn()
