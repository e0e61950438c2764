"""The same store code on a 3-master Redis Cluster, with two shards on different nodes."""

from __future__ import annotations

import struct
import threading
import time

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from fedlearn.devtools.cluster import EmbeddedCluster
from fedlearn.store import Store, StreamFullError, StreamId, keys, shard_of
from fedlearn.store.connection import connect, without_retries
from fedlearn.store.predictions import PredictionQuota
from fedlearn.store.revocations import Revocations

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
        # retention's script touches the blob, the pointer and the pruned hash: one slot
        assert store.bases.put_base("v2", b"FLFM 2") and store.bases.set_current("v2") == "v1"
        assert store.bases.prune("v1") and list(store.bases.pruned()) == ["v1"]


def _kill_readers_after(node: redis.Redis, delay_s: float) -> threading.Thread:
    """Kill, on ``node``, every connection blocked in XREADGROUP once ``delay_s`` has passed:
    the reply of the command is lost, as when a node restarts mid-read."""

    def kill() -> None:
        time.sleep(delay_s)
        for client in node.client_list():
            if client.get("cmd") == "xreadgroup":
                node.client_kill_filter(_id=client["id"])

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.parametrize("resends", [False, True])
def test_a_cluster_xreadgroup_whose_reply_is_lost_is_not_resent(
    cluster: EmbeddedCluster, resends: bool
):
    """The trainer's reads on a cluster raise instead of resending (connection.without_retries):
    a resent XREADGROUP '>' would strand what the lost reply delivered. The store's own client,
    which resends everything else, is the control: it rides the same kill out."""
    name = b"reader-resends" if resends else b"reader-once"
    store_client = connect(cluster.url)
    reader = store_client if resends else without_retries(store_client)
    stream = keys.stream(0)
    node = cluster.node_of_slot(key_slot(stream.encode())).client()
    try:
        store_client.xgroup_create(stream, name, id="$", mkstream=True)
        killer = _kill_readers_after(node, 0.5)
        started = time.monotonic()
        if resends:
            assert reader.xreadgroup(name, "c", {stream: ">"}, count=1, block=1500) in (
                [],
                None,
                {},
            )
        else:
            with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
                reader.xreadgroup(name, "c", {stream: ">"}, count=1, block=1500)
            assert time.monotonic() - started < 1.4, "raised at the kill, not after a resend"
        killer.join()
    finally:
        store_client.xgroup_destroy(stream, name)
        store_client.close()
        if reader is not store_client:
            reader.close()
        node.close()


@pytest.mark.slow
def test_a_users_one_read_spans_the_base_pointers_node_and_the_users(cluster: EmbeddedCluster):
    """What the model GET reads in one round trip lives in two slots (``{base}`` and the
    user's shard); on a cluster the pipeline sends each node its part."""
    with Store.from_url(cluster.url, n_shards=N_SHARDS) as store:
        port_of = {
            s: cluster.node_of_slot(key_slot(keys.stream(s).encode())).port for s in store.shards
        }
        base_port = cluster.node_of_slot(key_slot(keys.base_current().encode())).port
        shard = next(s for s in store.shards if port_of[s] != base_port)
        user, other = [
            f"reader-{i}" for i in range(500) if shard_of(f"reader-{i}", N_SHARDS) == shard
        ][:2]
        assert store.bases.put_base("read-1", b"FLFM", {})
        store.bases.set_current("read-1")
        store.client.hset(
            keys.delta(shard, user),
            mapping={"delta": fldl(2), "last_event": "7-0", "base": "read-1", "generation": 0,
                     "events": 2, "gate": b""},
        )  # fmt: skip
        store.client.hset(keys.rebase_notes(shard, "read-0"), user, b'5-1|{"w0": 0.5}')
        Revocations(store.client, N_SHARDS).revoke(user, keep_s=60, at=123.5)

        read = store.user_reads.read(user, versions=["read-0", "read-9"], revocation=True)
        assert read.current == "read-1" and read.revoked_at == 123.5
        assert read.record is not None and read.record.events == 2
        assert read.record.last_event == StreamId(7, 0) and read.record.delta == fldl(2)
        assert read.notes == {"read-0": (StreamId(5, 1), b'{"w0": 0.5}'), "read-9": None}
        assert read.missing_notes(["read-9", "read-2"]) == ["read-2"]
        unrevoked = store.user_reads.read(other)
        assert unrevoked.current == "read-1" and unrevoked.record is None
        assert unrevoked.revoked_at is None and unrevoked.notes == {}
