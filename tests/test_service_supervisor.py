"""The supervisor of ``fedlearn up``: restart delays that reset, and the embedded Redis healed
on its own port with its data, or given up on with a clear error. (The process faults under
load are in test_faults.py.)"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from fedlearn.config import load_settings
from fedlearn.devtools.supervisor import (
    FIRST_DELAY_S,
    HEALTHY_AFTER_S,
    MAX_DELAY_S,
    Part,
    RedisLostError,
    Supervisor,
    describe_exit,
)
from tests.live import wait_for


def test_the_restart_delay_doubles_in_a_crash_loop_and_resets_after_a_healthy_run() -> None:
    part = Part("trainer-0", ["true"])
    delays = []
    for _ in range(8):
        delays.append(part.crashed(now=part.started_at + 1.0))
    assert delays[:3] == [FIRST_DELAY_S, 2 * FIRST_DELAY_S, 4 * FIRST_DELAY_S]
    assert delays[-1] == MAX_DELAY_S
    # A part that then ran healthy for a while is restarted quickly again.
    assert part.crashed(now=part.started_at + HEALTHY_AFTER_S) == FIRST_DELAY_S


def test_exit_statuses_are_described() -> None:
    assert describe_exit(1) == "status 1"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"


def supervisor(tmp_path: Path, said: list[str]) -> Supervisor:
    settings = load_settings(data_dir=tmp_path, auth=False, redis_appendfsync="always")
    return Supervisor(settings, port=1, celery=False, say=said.append)


def test_a_killed_redis_is_restarted_on_its_port_with_its_data(tmp_path: Path) -> None:
    said: list[str] = []
    sup = supervisor(tmp_path, said)
    sup.start_redis()
    assert sup.redis is not None
    try:
        with sup.redis.client() as client:
            client.set("kept", b"yes")
        port, pid = sup.redis.port, sup.redis.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not sup.redis.running, 10, "redis-server to die")
        sup.heal_redis()
        assert sup.redis.running and sup.redis.port == port and sup.redis.pid != pid
        with sup.redis.client() as client:
            assert client.get("kept") == b"yes", "appendfsync always: an acknowledged write"
        assert any("exited with signal SIGKILL; restarting it" in line for line in said), said
    finally:
        sup.redis.stop()


def test_a_redis_that_cannot_be_restarted_stops_the_service_with_the_reason(
    tmp_path: Path,
) -> None:
    sup = supervisor(tmp_path, [])
    sup.start_redis()
    assert sup.redis is not None and sup.redis.pid is not None
    port = sup.redis.port
    os.kill(sup.redis.pid, signal.SIGKILL)
    wait_for(lambda: not sup.redis.running, 10, "redis-server to die")
    with socket.socket() as squatter:  # somebody else took the port meanwhile
        squatter.bind(("127.0.0.1", port))
        with pytest.raises(RedisLostError, match=f"port {port} died .* could not be restarted"):
            sup.heal_redis()
