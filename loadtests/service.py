"""The service under test: ``fedlearn up --demo`` started on 127.0.0.1 and stopped after, and
a CPU sampler that tells which of its parts (API, trainers, Redis) or locust is busy.

The service is started exactly as an operator starts it (a subprocess running the ``fedlearn``
command), with its data in a folder of our own, so a load test never touches ``./.fedlearn``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

import psutil
import urllib3

from fedlearn.devtools.embedded import free_port
from fedlearn.devtools.lifecycle import Startable, log_tail, stop_process
from fedlearn.devtools.runtime import read_runtime

START_TIMEOUT_S = 180.0  # the demo trains its base at the first start: seconds, not minutes
# A load test measures the service's capacity, and its Zipf population sends far more per hot
# user than one person could, so the per-user rates are set beyond reach; not to 0, which would
# skip the check and measure a cheaper path than the one shipped (the quotas themselves are
# tested in tests/test_api_gunicorn_quotas.py and tests/test_api_quotas.py).
UNLIMITED = {"FEDLEARN_RATE_EVENTS_PER_S": "1e9", "FEDLEARN_RATE_RANK_PER_S": "1e9"}


class ServiceError(RuntimeError):
    pass


class Service(Startable):
    """``fedlearn up --demo`` with its data in ``data_dir`` (a context manager)."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        *,
        port: int | None = None,
        trainers: int = 1,
        api_workers: int = 2,
        celery: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.log_path = log_path
        self.port = port or free_port()
        self.argv = [
            sys.executable, "-m", "fedlearn", "up", "--demo", "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--trainers", str(trainers),
            "--api-workers", str(api_workers),
        ] + ([] if celery else ["--no-celery"])  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **UNLIMITED},
        )
        http = urllib3.PoolManager(retries=False, timeout=2.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"`{' '.join(self.argv[2:])}` exited with status {self.proc.returncode}; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if http.request("GET", f"{self.url}/readyz").status == 200:
                    return self
            except urllib3.exceptions.HTTPError:
                pass  # not listening yet
            time.sleep(0.25)
        self.stop()
        raise ServiceError(
            f"the service did not answer GET /readyz 200 within {timeout:.0f} s; last lines of "
            f"{self.log_path}:\n{self.log_tail()}"
        )

    def redis_url(self) -> str:
        runtime = read_runtime(self.data_dir) or {}
        if not runtime.get("redis_url"):
            raise ServiceError(f"{self.data_dir}/service.json names no redis_url: is it running?")
        return str(runtime["redis_url"])

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The service's processes by part: ``api``, ``trainers``, ``redis``, ``celery``."""
        parts: dict[str, list[psutil.Process]] = defaultdict(list)
        if self.proc is None:
            return parts
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            parts[part_of(child)].append(child)
        return parts

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 25) -> str:
        return log_tail(self.log_path, lines)


def part_of(proc: psutil.Process) -> str:
    """Which part of the service a process is, from its command line."""
    try:
        argv = proc.cmdline()
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    text = " ".join(argv)
    if "redis" in name:  # the server, and its forks (AOF rewrite: "redis-aof-rewrite")
        return "redis"
    if "celery" in text:
        return "celery"
    if " worker" in text and "fedlearn" in text:
        return "trainers"
    if "fedlearn api" in text or "fedlearn-api" in text or "-m fedlearn api" in text:
        return "api"
    return f"other ({name})"


class CpuSampler(threading.Thread):
    """CPU use of groups of processes (in % of one core), sampled every ``every_s`` seconds.

    ``groups`` is called at every sample (processes come and go: gunicorn restarts a worker,
    the supervisor a trainer); the result is each group's mean and peak over the samples, and
    the same for the whole ``machine`` (all cores: 200 % is a full 2-core machine).
    """

    def __init__(self, groups: Any, every_s: float = 1.0) -> None:
        super().__init__(daemon=True, name="cpu-sampler")
        self.groups = groups
        self.every_s = every_s
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._seen: dict[int, psutil.Process] = {}
        self._done = threading.Event()

    def run(self) -> None:
        cores = psutil.cpu_count() or 1
        psutil.cpu_percent(None)  # primes the machine-wide counter
        while not self._done.wait(self.every_s):
            # The whole machine too: other work on it competes for the same cores.
            self.samples["machine"].append(psutil.cpu_percent(None) * cores)
            for name, procs in self.groups().items():
                total = 0.0
                for proc in procs:
                    # A Process object remembers its last CPU times: reuse it across samples.
                    known = self._seen.setdefault(proc.pid, proc)
                    try:
                        total += known.cpu_percent(None)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        self._seen.pop(proc.pid, None)
                self.samples[name].append(total)

    def stop(self) -> dict[str, dict[str, float]]:
        self._done.set()
        self.join()
        # The first sample of each process only primes its counters (psutil reports 0.0).
        return {
            name: {"mean": sum(v[1:]) / max(1, len(v) - 1), "peak": max(v[1:], default=0.0)}
            for name, v in self.samples.items()
        }
