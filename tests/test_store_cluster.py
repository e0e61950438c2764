"""The same store code on a 3-master Redis Cluster, with two shards on different nodes."""

from __future__ import annotations

import struct

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from fedlearn.devtools.cluster import EmbeddedCluster
from fedlearn.store import Store, StreamFullError, keys, shard_of
from fedlearn.store.predictions import PredictionQuota

N_SHARDS = 8


def fldl(events: int) -> bytes:
    return struct.pack("<4sIIIdQI", b"FLDL", 1, 0, 0, 0.0, events, 0)


def users_of(shard: int, count: int) -> list[str]:
    return [f"u{i}" for i in range(5000) if shard_of(f"u{i}", N_SHARDS) == shard][:count]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with EmbeddedCluster(tmp_path_factory.mktemp("cluster"), masters=3) as running:
        yield running


@pytest.mark.slow
def test_ingest_and_commit_on_two_shards_on_different_nodes(cluster: EmbeddedCluster):
    with Store.from_url(cluster.url, n_shards=N_SHARDS, stream_maxlen=4) as store:
        assert isinstance(store.client, RedisCluster) and store.is_cluster
        assert store.ping()
        node_of = {s: cluster.node_of_slot(key_slot(keys.stream(s).encode())) for s in store.shards}
        first = 0
        second = next(s for s in store.shards if node_of[s].port != node_of[first].port)

        for shard in (first, second):
            a, b = users_of(shard, 2)
            evs = [{"event_id": f"{u}-{i}", "user": u} for u in (a, b) for i in range(2)]
            assert store.streams.append_events(shard, evs) == (4, 0)
            assert store.streams.append_events(shard, evs[:1]) == (0, 1)
            with pytest.raises(StreamFullError):
                store.streams.append_events(shard, [{"event_id": "more", "user": a}])

            assert store.leases.acquire(shard, f"t{shard}", 30_000)
            assert not store.leases.acquire(shard, "intruder", 30_000)
            dead = store.streams.read_batch(shard, "dead", count=10, block_ms=0)
            batch = store.streams.claim(shard, f"t{shard}")
            assert batch.ids == dead.ids and len(batch) == 4
            last = {e.event["user"]: e.id for e in batch}
            result = store.streams.commit_batch(
                shard, owner=f"t{shard}", deltas={u: fldl(2) for u in last}, last_ids=last,
                entry_ids=batch.ids, log_entries=[e.event for e in batch], base="v1",
                generation=0,
            )  # fmt: skip
            assert (result.users, result.acked) == (2, 4)
            assert store.streams.trim_acked(shard) == 4
            records = store.deltas.get_many(shard, [a, b])
            assert {u: r.events for u, r in records.items()} == {a: 2, b: 2}
            assert [e.event["event_id"] for e in store.applied.read(shard)] == [
                e.event["event_id"] for e in batch
            ]
            assert sorted(store.deltas.users(shard)) == sorted([a, b])
            assert store.deltas.delete_user(shard, a)
            record = {"user": a, "items": {"i": {"features": {"x": 1.0}, "score": 0.5}}}
            quota = PredictionQuota(max_records=2, max_bytes=4096)
            store.predictions.put_predictions(shard, {"p": record}, 60, quota=quota)
            found = store.predictions.get_predictions(shard, [("p", a)])
            assert found["p"]["items"] == record["items"]

        assert store.bases.put_base("v1", b"FLFM", {"n": 1})
        assert store.bases.set_current("v1") is None
        assert store.bases.get_base("v1") == b"FLFM"
        assert [h.version for h in store.bases.history()] == ["v1"]
