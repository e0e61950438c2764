"""The deployment's shard count is recorded in Redis on first use, and a process configured
with another count is refused (by the store, the API, the trainer) before it routes a user."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedlearn.api import create_app
from fedlearn.config import ConfigError, load_settings
from fedlearn.store import ShardCountError, Store, keys


def test_the_first_process_records_its_count_and_the_same_count_passes(store: Store) -> None:
    assert store.client.hget(keys.config(), "n_shards") is None
    assert store.claim_shard_count() == 4
    assert store.claim_shard_count() == 4
    assert store.client.hget(keys.config(), "n_shards") == b"4"


def test_another_count_is_refused_with_both_counts_and_nothing_changes(
    store: Store, redis_url: str
) -> None:
    store.claim_shard_count()
    with Store.from_url(redis_url, 1024) as other, pytest.raises(ShardCountError) as caught:
        other.claim_shard_count()
    assert (caught.value.recorded, caught.value.configured) == (4, 1024)
    assert "FEDLEARN_N_SHARDS=1024" in str(caught.value)
    assert "set FEDLEARN_N_SHARDS=4" in str(caught.value)
    assert store.client.hget(keys.config(), "n_shards") == b"4"


def test_the_api_refuses_to_start_on_a_redis_of_another_count(store: Store, redis_url: str) -> None:
    store.claim_shard_count()
    settings = load_settings(redis_url=redis_url, n_shards=16, auth=False)
    with Store.from_url(redis_url, 16) as other, pytest.raises(ConfigError, match="4 shards"):
        create_app(settings, other)


def test_a_trainer_of_another_count_exits_with_the_reason(store: Store, redis_url: str) -> None:
    store.claim_shard_count()
    env = {"REDIS_URL": redis_url, "FEDLEARN_N_SHARDS": "8", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "fedlearn", "worker", "--name", "wrong"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "holds a deployment of 4 shards but FEDLEARN_N_SHARDS=8" in done.stderr
    assert store.client.exists(keys.stream(0), keys.lease(0)) == 0, "it touched a shard"


@pytest.mark.parametrize("configured", [64, 4])
def test_data_from_before_the_record_is_checked_against_the_count(
    redis_url: str, configured: int
) -> None:
    """A deployment of 8 shards that ran trainers before counts were recorded: its streams
    say which count it had, and a larger or smaller one is refused before anything is
    recorded; its own count is recorded."""
    with Store.from_url(redis_url, 8) as old:
        for shard in old.shards:
            old.streams.ensure_group(shard)  # what every trainer does on gaining a shard
        other = Store.from_url(redis_url, configured)
        with pytest.raises(ShardCountError, match="the default was 8") as caught:
            other.claim_shard_count()
        other.close()
        assert caught.value.recorded is None
        assert old.client.hget(keys.config(), "n_shards") is None
        assert old.claim_shard_count() == 8
