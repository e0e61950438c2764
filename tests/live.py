"""Helpers for tests that run the service as real processes: an HTTP client, and the API and
trainers started with the same commands an operator uses (``fedlearn api``/``worker``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import urllib3

from fedlearn.config import Settings, settings_env


class Api:
    """A tiny HTTP client: JSON in, urllib3 responses out."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.token = token
        self.http = urllib3.PoolManager(retries=False, timeout=30.0)

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
