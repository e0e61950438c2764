"""The embedded Redis (`fedlearn up`, `fedlearn api` without REDIS_URL, the tests) never evicts
a key to make room: deltas and streams would be lost silently, and an evicted dedupe set would
let a retried batch be applied twice. Growth is bounded by the per-user quotas instead."""

from __future__ import annotations

from fedlearn.devtools import EmbeddedRedis


def test_the_embedded_redis_never_evicts(redis_server: EmbeddedRedis):
    with redis_server.client() as client:
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("maxmemory") == {"maxmemory": "0"}
