"""connect(): bytes out, retries on, single Redis told apart from a cluster by asking it."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from fedlearn.store import Store, connect
from fedlearn.store.connection import is_cluster


def test_a_single_redis_gets_a_plain_client(redis_url):
    client = connect(redis_url)
    assert isinstance(client, redis.Redis) and not isinstance(client, RedisCluster)
    assert not is_cluster(client)
    client.set("k", "é")
    assert client.get("k") == "é".encode()  # bytes: deltas and bases are binary
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["health_check_interval"] == 30
    assert kwargs["retry"].get_retries() == 5
    client.close()


def test_connect_options_are_checked():
    with pytest.raises(ValueError, match="Redis URL must look like 'redis://host:port/0'"):
        connect("localhost:6379")
    with pytest.raises(ValueError, match="socket_timeout must be > 0 seconds, got 0"):
        connect("redis://127.0.0.1:1", socket_timeout=0)
    with pytest.raises(ValueError, match="retries must be >= 0, got -1"):
        connect("redis://127.0.0.1:1", retries=-1)


def test_store_from_url(redis_url):
    with Store.from_url(redis_url, n_shards=3) as store:
        assert store.ping()
        assert not store.is_cluster
        assert list(store.shards) == [0, 1, 2]
        assert repr(store) == "Store(redis, n_shards=3)"
    with pytest.raises(ValueError, match="n_shards must be between 1 and 16384, got 0"):
        Store.from_url(redis_url, n_shards=0)


def test_the_store_also_speaks_resp3(redis_url):
    """A client built with protocol=3 (someone's connection factory) works the same."""
    client = redis.Redis.from_url(redis_url, protocol=3)
    store = Store(client, n_shards=1)
    store.streams.append_events(0, [{"event_id": "a", "user": "u"}, {"event_id": "b", "user": "u"}])
    assert store.leases.acquire(0, "t", 10_000)
    batch = store.streams.read_batch(0, "t", count=1, block_ms=0)
    assert [e.event["event_id"] for e in batch] == ["a"]
    assert len(store.streams.read_batch(0, "t", block_ms=1)) == 1  # "b"
    assert len(store.streams.read_batch(0, "t", block_ms=1)) == 0  # empty reply after a wait
    assert store.streams.pending_count(0) == 2
    store.streams.commit_batch(
        0, owner="t", deltas={}, last_ids={}, entry_ids=batch.ids, base="v", generation=0
    )
    assert store.streams.trim_acked(0) == 1
    assert len(store.streams.claim(0, "t")) == 1  # "b", still pending
    store.close()
