"""Helpers for tests that run the service as real processes: an HTTP client, and the API and
trainers started with the same commands an operator uses (``fedlearn api``/``worker``), events
to send, a producer that streams them while something fails, and what the store applied."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
import urllib3

from fedlearn.config import Settings, settings_env
from fedlearn.devtools.lifecycle import stop_process
from fedlearn.model import Base
from fedlearn.store import Store


class Api:
    """A tiny HTTP client: JSON in, urllib3 responses out."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = url
        self.token = token
        self.http = urllib3.PoolManager(retries=False, timeout=timeout)

    def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        body: bytes | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        head = dict(headers or {})
        token = token if token is not None else self.token
        if token:
            head["Authorization"] = f"Bearer {token}"
        if json is not None:
            body = orjson.dumps(json)
            head["Content-Type"] = "application/json"
        return self.http.request(method, self.url + path, body=body, headers=head, redirect=False)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Wait until the server at ``url`` answers ``/healthz``; fail with its log if it exits."""
    http = urllib3.PoolManager(retries=False, timeout=2.0)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            return http.request("GET", url + "/healthz").status == 200
        except urllib3.exceptions.HTTPError:
            return False

    wait_for(healthy, timeout, f"{url}/healthz to answer")


def start_server(
    argv: list[str], env: dict[str, str], log: Path, url: str, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start the server ``argv`` (stdout and stderr into ``log``) and wait until ``url``
    answers ``/healthz``; the caller stops it. One that never gets healthy is killed here, so
    a failed start leaves no process behind."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, **popen)
    try:
        wait_healthy(url, proc, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


class Service:
    """``fedlearn api`` and ``fedlearn worker`` processes sharing one settings object."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fedlearn", *args], env=self.env, stdout=out, stderr=out
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def start_api(self, workers: int = 2) -> Api:
        port = self.settings.api_port
        self.start("api", "api", "--port", str(port), "--workers", str(workers))
        api = Api(f"http://127.0.0.1:{port}")
        wait_healthy(api.url, self.procs["api"], self.logs / "api.log")
        return api

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs[name]
        proc.send_signal(sig)
        return proc.wait(30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def publish_base(redis_url: str, n_shards: int, base: Base) -> None:
    """Publish ``base`` (generation 0) and make it the current version."""
    with Store.from_url(redis_url, n_shards) as store:
        store.bases.put_base(base.version, base.to_bytes(), {"generation": 0})
        store.bases.set_current(base.version)


def events_for(users: list[str], n: int, seed: int) -> list[dict]:
    """``n`` events of random ``users`` (ids ``ev-<seed>-<i>``: distinct seeds never collide)."""
    rng = np.random.default_rng(seed)
    return [
        {
            "event_id": f"ev-{seed}-{i}",
            "user": users[int(rng.integers(len(users)))],
            "item": str(int(rng.integers(40))),
            "signal": "click" if rng.random() < 0.4 else "skip",
            "ts": 1.7e9 + i,
            "context": {"hour": str(int(rng.integers(24)))},
        }
        for i in range(n)
    ]


def applied_per_user(settings: Settings, users: Iterable[str]) -> Counter:
    """Events applied per user, from the ``events`` field of their stored delta records."""
    assert settings.redis_url is not None
    with Store.from_url(settings.redis_url, settings.n_shards) as store:
        counts: Counter = Counter()
        for user in users:
            record = store.deltas.get(store.shard_of(user), user)
            counts[user] = record.events if record else 0
        return counts


class Producer(threading.Thread):
    """Streams events to ``POST /v1/events`` in batches, as a client would: a batch that did
    not get a 202 (refused connection, 503 while Redis restarts) is sent again, same event
    ids, until it does (the service's de-duplication makes that safe). Bounded: a batch that
    gets no 202 for ``give_up_s`` stops the producer with ``error`` set."""

    def __init__(
        self, api: Api, events: list[dict], *, batch: int = 200, pause_s: float = 0.0,
        give_up_s: float = 60.0,
    ) -> None:  # fmt: skip
        super().__init__(name="producer", daemon=True)
        self.api, self.events, self.batch = api, events, batch
        self.pause_s, self.give_up_s = pause_s, give_up_s
        self.sent = 0  # events of batches answered 202
        self.retries = 0
        self.error: str | None = None

    def run(self) -> None:
        for start in range(0, len(self.events), self.batch):
            chunk = self.events[start : start + self.batch]
            deadline = time.monotonic() + self.give_up_s
            while not self._post(chunk):
                if time.monotonic() > deadline:
                    self.error = f"no 202 for the batch at {start} in {self.give_up_s} s"
                    return
                self.retries += 1
                time.sleep(0.05)
            self.sent += len(chunk)
            time.sleep(self.pause_s)

    def _post(self, chunk: list[dict]) -> bool:
        try:
            return self.api.call("POST", "/v1/events", {"events": chunk}).status == 202
        except urllib3.exceptions.HTTPError:
            return False


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` and their command lines (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        # the state and ppid follow the parenthesised command name, which may hold spaces
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found[int(entry.name)] = cmdline
    return found


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_gracefully(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM ``proc`` (a `fedlearn up`, say) and wait; its whole group is SIGKILLed if it
    does not stop within ``timeout`` s. Returns its exit status."""
    return stop_process(proc, timeout, group=True)


# --- `fedlearn up` as a person starts it --------------------------------------------------

UP_START_TIMEOUT_S = 40.0  # training the demo base takes a few seconds on 2 cores
STOP_TIMEOUT_S = 30.0


@dataclass
class UpService:
    """A running ``fedlearn up --demo`` and what it printed."""

    proc: subprocess.Popen[bytes]
    folder: Path
    api_url: str
    demo_url: str

    @property
    def token(self) -> str:
        """The demo user's token, from the demo link ``up`` printed."""
        return parse_qs(urlsplit(self.demo_url).query)["token"][0]

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def logs(self) -> str:
        out = (self.folder / "up.out").read_text(errors="replace")
        err = (self.folder / "up.err").read_text(errors="replace")
        return f"--- stdout\n{out[-4000:]}\n--- stderr\n{err[-4000:]}"


def up_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without fedlearn's settings (a fresh service, embedded Redis),
    plus ``extra``."""
    drop = ("FEDLEARN_", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **extra}


def _wait_until_ready(proc: subprocess.Popen[bytes], folder: Path, port: int) -> str:
    """The demo link once ``/readyz`` answers 200; fails with the service's output otherwise."""
    http = urllib3.PoolManager(retries=False, timeout=2.0)
    deadline = time.monotonic() + UP_START_TIMEOUT_S
    out = folder / "up.out"
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"fedlearn up exited with {proc.returncode}:\n{out.read_text()}")
        link = re.search(r"^demo page\s+(\S+)$", out.read_text(), re.MULTILINE)
        if link:
            try:
                if http.request("GET", f"http://127.0.0.1:{port}/readyz").status == 200:
                    return link.group(1)
            except urllib3.exceptions.HTTPError:
                pass  # the API is still binding its port
        if time.monotonic() > deadline:
            raise AssertionError(
                f"fedlearn up was not ready in {UP_START_TIMEOUT_S:.0f} s:\n{out.read_text()}"
            )
        time.sleep(0.1)


@contextlib.contextmanager
def running_up(folder: Path, port: int, env: dict[str, str]) -> Iterator[UpService]:
    """``fedlearn up --demo --no-celery`` on ``port`` with its data in ``folder/data``; stopped
    (SIGTERM, then SIGKILL of its process group) on exit."""
    argv = [sys.executable, "-m", "fedlearn", "up", "--demo", "--no-celery"]
    argv += ["--port", str(port), "--data-dir", str(folder / "data")]
    with (folder / "up.out").open("wb") as out, (folder / "up.err").open("wb") as err:
        # Its own process group, so a failed test can still stop everything it started.
        proc = subprocess.Popen(
            argv,
            cwd=folder,
            env=up_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        demo_url = _wait_until_ready(proc, folder, port)
        yield UpService(proc, folder, f"http://127.0.0.1:{port}", demo_url)
    finally:
        if proc.poll() is None:
            stop_gracefully(proc, STOP_TIMEOUT_S)


@contextlib.contextmanager
def gunicorn_api(settings: Settings, folder: Path) -> Iterator[tuple[str, Path]]:
    """The API under gunicorn via ``python -m fedlearn.api.server`` (run_gunicorn), as
    ``fedlearn api`` runs it, with its metrics folder and log in ``folder``: (URL, log)."""
    env = {**os.environ, **settings_env(settings)}
    (folder / "prometheus").mkdir(parents=True, exist_ok=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(folder / "prometheus")
    log = folder / "gunicorn.log"
    url = f"http://127.0.0.1:{settings.api_port}"
    proc = start_server([sys.executable, "-m", "fedlearn.api.server"], env, log, url)
    try:
        yield url, log
    finally:
        proc.terminate()
        proc.wait(20)
