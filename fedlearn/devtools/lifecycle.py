"""Things that are started and stopped (a redis-server, a cluster, a test HTTP server), usable
as context managers: ``with EmbeddedRedis(folder) as server: ...``."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self


class Startable:
    """``start()`` returns the object itself; ``with`` starts it and stops it on the way out."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen[bytes], timeout: float, *, group: bool = False) -> int:
    """SIGTERM ``proc`` and wait up to ``timeout`` s for it to finish cleanly; then SIGKILL it
    (its whole process group with ``group``, for a parent that leaves children behind).
    Returns its exit status."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        return proc.wait()


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a process's log file, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
