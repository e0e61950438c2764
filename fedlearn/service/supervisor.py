"""``fedlearn up``: Redis, the API, the trainers (and Celery) on one machine, stopped together.

Each part runs as its own process, started with the same commands an operator would run by
hand (``fedlearn api``, ``fedlearn worker``, ``celery ...``), so what ``up`` runs is what
docker-compose runs. A part that dies is restarted (with a growing delay); Ctrl-C or SIGTERM
stops the API first (no new events), then the workers (they finish their batch), then Redis.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedlearn.config import Settings, ensure_secret_key
from fedlearn.service.runtime import clear_runtime, read_runtime, write_runtime
from fedlearn.store import EmbeddedRedis

STOP_TIMEOUT_S = 20.0


class AlreadyRunningError(RuntimeError):
    pass


@dataclass
class Part:
    """One supervised process."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    env: dict[str, str] = field(default_factory=dict)

    def start(self, base_env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            self.argv, env={**base_env, **self.env}, stdin=subprocess.DEVNULL
        )
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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
            importlib.util.find_spec("workers.celery_app") is not None if celery is None else celery
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
        self.redis = EmbeddedRedis(self.data_dir / "redis", port=int(previous.get("redis_port", 0)))
        try:
            self.redis.start()
        except Exception:
            # The old port may be taken now; any free one will do, the data is in the folder.
            self.redis = EmbeddedRedis(self.data_dir / "redis", port=0)
            self.redis.start()
        self.redis_url = self.redis.url
        return self.redis_url

    def plan(self) -> list[Part]:
        fedlearn = [sys.executable, "-m", "fedlearn"]
        parts = [
            Part(
                "api",
                [*fedlearn, "api", "--port", str(self.port), "--workers", str(self.api_workers)],
            )
        ]
        parts += [
            Part(f"trainer-{i}", [*fedlearn, "worker", "--name", f"trainer-{i}"])
            for i in range(self.trainers)
        ]
        if self.celery:
            celery = [sys.executable, "-m", "celery", "-A", "workers.celery_app"]
            parts.append(
                Part(
                    "celery-worker", [*celery, "worker", "--concurrency", "2", "--loglevel", "INFO"]
                )
            )
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
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- run and stop -----------------------------------------------------------------------

    def watch(self) -> None:
        """Restart parts that die, until :meth:`stop` is called."""
        env = self.env()
        while not self.stopping.wait(0.5):
            for part in self.parts:
                if part.alive() or self.stopping.is_set():
                    continue
                delay = min(30.0, 2.0**part.restarts)
                if time.monotonic() - part.started_at < delay:
                    continue
                code = part.proc.returncode if part.proc else None
                self.say(f"{part.name} exited with status {code}; restarting it")
                part.restarts += 1
                part.start(env)

    def stop(self) -> None:
        self.stopping.set()
        order = sorted(self.parts, key=lambda p: 0 if p.name == "api" else 1)
        for part in order:
            part.stop()
        if self.redis is not None:
            self.redis.stop()
        clear_runtime(self.data_dir)
