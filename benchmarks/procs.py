"""The processes a benchmark runs against, started as an operator would start them.

- :func:`our_api`: ``python -m fedlearn api`` (gunicorn, gthread workers: ``fedlearn up``'s)
- :func:`bare_api`: ``benchmarks/bare_app.py`` (gunicorn, sync workers: the ceiling)
- :func:`trainer`: ``python -m fedlearn worker`` with its Prometheus port
- :func:`load`: ``benchmarks/http_load.py`` with a spec, returning its JSON result

Everything listens on 127.0.0.1 only and is stopped (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import urllib3

from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port

HERE = Path(__file__).resolve().parent
SECRET = "bench-secret-key-0123456789abcdef"


class ProcError(RuntimeError):
    pass


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    http = urllib3.PoolManager(retries=False, timeout=2.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProcError(f"{proc.args} exited with {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(urllib3.exceptions.HTTPError):
            if http.request("GET", url).status == 200:
                return
        time.sleep(0.1)
    raise ProcError(f"{url} did not answer 200 within {timeout:.0f} s: {_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def service_env(redis_url: str, data_dir: Path, n_shards: int) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "FEDLEARN_SECRET_KEY": SECRET,
        "FEDLEARN_DATA_DIR": str(data_dir),
        "FEDLEARN_N_SHARDS": str(n_shards),
        # The ingest benchmark fills the streams with no trainer running: let them hold it.
        "FEDLEARN_STREAM_MAXLEN": "50000000",
        # A few benchmark users send thousands of events a second: rates beyond reach, but
        # not 0, so the rate check (one script call per request) is measured as shipped.
        "FEDLEARN_RATE_EVENTS_PER_S": "1e9",
        "FEDLEARN_RATE_RANK_PER_S": "1e9",
        "PYTHONUNBUFFERED": "1",
    }


@contextlib.contextmanager
def _spawn(argv: list[str], env: dict[str, str], ready: str, log: Path) -> Iterator[str]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            _wait_http(ready, proc, log)
            yield ready
        finally:
            _stop(proc)


@contextlib.contextmanager
def our_api(redis_url: str, data_dir: Path, n_shards: int, workers: int = 2) -> Iterator[str]:
    """The fedlearn API as ``fedlearn up`` serves it; yields its base URL."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "fedlearn", "api", "--port", str(port), "--workers", str(workers)]
    env = service_env(redis_url, data_dir, n_shards)
    # A fresh multiprocess folder: run_gunicorn empties it, but never share one across runs.
    env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-", dir=data_dir)
    url = f"http://127.0.0.1:{port}"
    with _spawn(argv, env, f"{url}/healthz", data_dir / "api.log"):
        yield url


@contextlib.contextmanager
def bare_api(redis_url: str, log: Path, workers: int = 2) -> Iterator[str]:
    """The bare Flask app (``bare_app.py``) under gunicorn with sync workers."""
    port = free_port()
    argv = [
        sys.executable,
        str(HERE / "bare_app.py"),
        "--port",
        str(port),
        "--redis-url",
        redis_url,
        "--workers",
        str(workers),
    ]
    url = f"http://127.0.0.1:{port}"
    with _spawn(argv, {**os.environ}, f"{url}/healthz", log):
        yield url


@contextlib.contextmanager
def trainer(redis_url: str, data_dir: Path, n_shards: int) -> Iterator[str]:
    """One ``fedlearn worker`` process; yields the URL of its Prometheus metrics."""
    log = data_dir / "trainer.log"
    argv = [sys.executable, "-m", "fedlearn", "worker", "--name", "bench", "--metrics-port", "0"]
    env = service_env(redis_url, data_dir, n_shards)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while (match := re.search(r"metrics on (http://\S+)", _tail(log, 50))) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ProcError(f"the trainer did not start: {_tail(log)}")
                time.sleep(0.1)
            yield match.group(1)
        finally:
            _stop(proc)


def load(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run ``http_load.py`` with ``spec`` (in its own process) and return its result."""
    spec_file = folder / f"load-{time.monotonic_ns()}.json"
    spec_file.write_bytes(orjson.dumps(spec))
    bound = spec["warmup_s"] + spec["seconds"] + 120
    done = subprocess.run(
        [sys.executable, str(HERE / "http_load.py"), str(spec_file)],
        capture_output=True,
        timeout=bound,
        check=False,
    )
    if done.returncode != 0:
        raise ProcError(f"http_load.py failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return orjson.loads(done.stdout.splitlines()[-1])


def print_on_fresh_redis(measure: Callable[..., dict[str, Any]], **options: Any) -> None:
    """Print, as JSON, ``measure(redis_url, folder, **options)`` run against a new embedded
    Redis in a temporary folder: what a benchmark script does when run on its own."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        result = measure(server.url, Path(tmp), **options)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
