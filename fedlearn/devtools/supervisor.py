"""``fedlearn up``: Redis, the API, the trainers (and Celery) on one machine, stopped together.

Each part runs as its own process, started with the same commands an operator would run by
hand (``fedlearn api``, ``fedlearn worker``, ``celery ...``), so what ``up`` runs is what
docker-compose runs. A part that dies is logged with its exit status and restarted, after a
delay that doubles with each crash and resets once the part has run healthy for a while (a
crash loop backs off, a rare crash is healed at once). The embedded Redis is supervised too:
if it dies it is restarted on the same port with the same data (its AOF), and if it cannot
be, ``watch`` raises ``RedisLostError`` and ``up`` exits with that message. Ctrl-C or SIGTERM
stops the API first (no new events), then the workers (they finish their batch), then Redis.

Every part serves Prometheus metrics on 127.0.0.1: the API on its port, each trainer and the
Celery worker on a port of its own (``FEDLEARN_METRICS_PORT`` and up, or free ports), listed in
``service.json`` and in ``DATA_DIR/prometheus-targets.json``, a file Prometheus reads as it is
(``file_sd_configs``), so a local Prometheus scrapes whatever ``up`` started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedlearn.config import Settings, ensure_secret_key
from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port
from fedlearn.devtools.errors import EmbeddedRedisError
from fedlearn.devtools.lifecycle import stop_process
from fedlearn.devtools.runtime import clear_runtime, read_runtime, write_runtime

STOP_TIMEOUT_S = 20.0
WATCH_EVERY_S = 0.25
FIRST_DELAY_S = 0.5  # the first restart after a healthy run: quick, the service is down
MAX_DELAY_S = 30.0
HEALTHY_AFTER_S = 60.0  # a part that ran this long has its restart delay reset
REDIS_START_ATTEMPTS = 3
TARGETS_FILE = "prometheus-targets.json"


class AlreadyRunningError(RuntimeError):
    pass


class RedisLostError(RuntimeError):
    """The embedded Redis died and could not be started again."""


def describe_exit(code: int | None) -> str:
    """``"status 1"`` or ``"signal SIGKILL"`` (Popen's negative return codes)."""
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


@dataclass
class Part:
    """One supervised process."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0  # crashes in a row (reset after a healthy run)
    started_at: float = 0.0
    restart_at: float | None = None  # when a dead part is due to start again
    env: dict[str, str] = field(default_factory=dict)
    metrics_port: int | None = None  # its Prometheus metrics, on 127.0.0.1

    def start(self, base_env: dict[str, str]) -> None:
        # A process group of its own, so that what it leaves behind can be found (below).
        self.proc = subprocess.Popen(
            self.argv, env={**base_env, **self.env}, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.started_at = time.monotonic()
        self.restart_at = None

    def kill_leftovers(self) -> None:
        """SIGKILL what is left of a dead part's process group.

        A SIGKILLed gunicorn master leaves its workers behind: they drain their connections
        for up to the graceful timeout while holding the listening socket, so the restarted
        master could not bind the port. Nothing they hold is lost: events are in Redis once
        acknowledged, and a client resends what got no answer.
        """
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def crashed(self, now: float) -> float:
        """Note a crash; returns the delay before the restart (doubling, reset when healthy)."""
        if now - self.started_at >= HEALTHY_AFTER_S:
            self.restarts = 0
        delay = min(MAX_DELAY_S, FIRST_DELAY_S * 2.0**self.restarts)
        self.restarts += 1
        self.restart_at = now + delay
        return delay

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        stop_process(self.proc, timeout)
        self.kill_leftovers()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Supervisor:
    """Starts and watches the parts of the service."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int,
        trainers: int = 1,
        api_workers: int = 2,
        celery: bool | None = None,
        say=print,
    ) -> None:
        self.settings = settings
        self.port = port
        self.trainers = trainers
        self.api_workers = api_workers
        # Celery runs when its app is installed (it is, from `pip install .`); off for tests.
        self.celery = (
            importlib.util.find_spec("fedlearn.jobs.app") is not None if celery is None else celery
        )
        self.say = say
        self.data_dir = Path(settings.data_dir).resolve()
        self.redis: EmbeddedRedis | None = None
        self.redis_url = settings.redis_url
        self.parts: list[Part] = []
        self.stopping = threading.Event()

    # -- start ------------------------------------------------------------------------------

    def check_not_running(self) -> None:
        runtime = read_runtime(self.data_dir)
        if runtime and _pid_alive(int(runtime.get("pid", 0))) and runtime.get("pid") != os.getpid():
            raise AlreadyRunningError(
                f"a fedlearn service is already running from {self.data_dir} (pid "
                f"{runtime['pid']}, API {runtime.get('api_url')}); stop it first (Ctrl-C in its "
                f"terminal or `kill {runtime['pid']}`), or use another --data-dir"
            )

    def start_redis(self) -> str:
        if self.redis_url:
            return self.redis_url
        previous = read_runtime(self.data_dir) or {}
        fsync = self.settings.redis_appendfsync
        self.redis = EmbeddedRedis(
            self.data_dir / "redis", port=int(previous.get("redis_port", 0)), appendfsync=fsync
        )
        try:
            self.redis.start()
        except Exception:
            # The old port may be taken now; any free one will do, the data is in the folder.
            self.redis = EmbeddedRedis(self.data_dir / "redis", port=0, appendfsync=fsync)
            self.redis.start()
        self.redis_url = self.redis.url
        return self.redis_url

    def metrics_ports(self) -> list[int]:
        """One port per trainer, then one for the Celery worker: fixed for the service's life,
        so a restarted part serves where Prometheus already looks."""
        count = self.trainers + (1 if self.celery else 0)
        first = self.settings.metrics_port
        return [first + i if first else free_port() for i in range(count)]

    def plan(self) -> list[Part]:
        fedlearn = [sys.executable, "-m", "fedlearn"]
        ports = self.metrics_ports()
        parts = [
            Part(
                "api",
                [*fedlearn, "api", "--port", str(self.port), "--workers", str(self.api_workers)],
                metrics_port=self.port,
            )
        ]
        parts += [
            Part(
                f"trainer-{i}",
                [*fedlearn, "worker", "--name", f"trainer-{i}", "--metrics-port", str(ports[i])],
                metrics_port=ports[i],
            )
            for i in range(self.trainers)
        ]
        if self.celery:
            celery = [sys.executable, "-m", "celery", "-A", "fedlearn.jobs.app"]
            worker = [*celery, "worker", "--concurrency", "2", "--loglevel", "INFO"]
            worker += ["--metrics-port", str(ports[-1])]
            parts.append(Part("celery-worker", worker, metrics_port=ports[-1]))
            beat_file = str(self.data_dir / "celerybeat-schedule")
            parts.append(
                Part(
                    "celery-beat", [*celery, "beat", "--schedule", beat_file, "--loglevel", "INFO"]
                )
            )
        return parts

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["REDIS_URL"] = self.redis_url or ""
        env["FEDLEARN_DATA_DIR"] = str(self.data_dir)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.check_not_running()
        if self.settings.auth:
            ensure_secret_key(self.data_dir)
        self.start_redis()
        self.parts = self.plan()
        env = self.env()
        for part in self.parts:
            part.start(env)
        write_runtime(
            self.data_dir,
            pid=os.getpid(),
            redis_url=self.redis_url,
            redis_port=self.redis.port if self.redis else None,
            api_url=self.api_url,
            data_dir=str(self.data_dir),
            parts={p.name: p.proc.pid for p in self.parts if p.proc},
            metrics=self.metrics_urls(),
        )
        self.write_targets()

    def metrics_urls(self) -> dict[str, str]:
        """Each part's ``/metrics`` URL, by part name."""
        return {
            p.name: f"http://127.0.0.1:{p.metrics_port}/metrics"
            for p in self.parts
            if p.metrics_port is not None
        }

    def write_targets(self) -> Path:
        """``prometheus-targets.json``: Prometheus's file service discovery format, one group
        per part (label ``part``), for a Prometheus on this machine to scrape."""
        groups = [
            {"targets": [f"127.0.0.1:{p.metrics_port}"], "labels": {"part": p.name}}
            for p in self.parts
            if p.metrics_port is not None
        ]
        path = self.data_dir / TARGETS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups, indent=2))
        os.replace(tmp, path)
        return path

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- run and stop -----------------------------------------------------------------------

    def watch(self) -> None:
        """Restart parts (and the embedded Redis) that die, until :meth:`stop` is called.

        Raises ``RedisLostError`` when the embedded Redis died and cannot be started again.
        """
        env = self.env()
        while not self.stopping.wait(WATCH_EVERY_S):
            self.heal_redis()
            now = time.monotonic()
            for part in self.parts:
                if part.alive() or self.stopping.is_set():
                    continue
                if part.restart_at is None:
                    part.kill_leftovers()
                    code = part.proc.returncode if part.proc else None
                    delay = part.crashed(now)
                    ran = now - part.started_at
                    self.say(
                        f"{part.name} (pid {part.proc.pid if part.proc else '?'}) exited with "
                        f"{describe_exit(code)} after {ran:.1f} s; restarting it in {delay:.1f} s"
                    )
                if now >= (part.restart_at or 0.0):
                    part.start(env)
                    self.say(f"{part.name} restarted (pid {part.proc.pid if part.proc else '?'})")

    def heal_redis(self) -> None:
        """Start the embedded Redis again (same port, same AOF) if it died."""
        if self.redis is None or self.redis.running or self.stopping.is_set():
            return
        code, port = self.redis.exit_code, self.redis.port
        self.say(f"redis-server on port {port} exited with {describe_exit(code)}; restarting it")
        for attempt in range(1, REDIS_START_ATTEMPTS + 1):
            try:
                self.redis.start()
            except EmbeddedRedisError as exc:
                if attempt == REDIS_START_ATTEMPTS:
                    raise RedisLostError(
                        f"redis-server on port {port} died ({describe_exit(code)}) and could not "
                        f"be restarted in {attempt} attempts: {exc}"
                    ) from exc
                time.sleep(FIRST_DELAY_S * attempt)
            else:
                self.say(f"redis-server restarted on port {port} (pid {self.redis.pid})")
                return

    def stop(self) -> None:
        self.stopping.set()
        order = sorted(self.parts, key=lambda p: 0 if p.name == "api" else 1)
        for part in order:
            part.stop()
        if self.redis is not None:
            self.redis.stop()
        clear_runtime(self.data_dir)
        (self.data_dir / TARGETS_FILE).unlink(missing_ok=True)
