"""Redis round trips counted: every send of redis-py's connections in this process (a command,
a pipeline or a script call is one), printed by benchmarks beside their timings.

Here, not in the package: a benchmark runs against another tree's package too (``--before``,
``PYTHONPATH``), which may not have it. The tests' ``round_trips`` fixture (tests/conftest.py)
counts the same way with pytest's monkeypatch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.connection import AbstractConnection


@contextmanager
def counting_round_trips() -> Iterator[list[int]]:
    """Count sends in ``count[0]`` of the list yielded (reset it before what is counted)
    until the block ends."""
    count = [0]
    send = AbstractConnection.send_packed_command

    def counted(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        count[0] += 1
        send(self, *args, **kwargs)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
