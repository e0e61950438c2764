"""Ingest and consuming: de-duplication, the 429 path, reading, claiming, trimming."""

from __future__ import annotations

import threading
import time

import pytest

from fedlearn.store import Store, StreamFullError, shard_of


def users_of(shard: int, n_shards: int, count: int) -> list[str]:
    """``count`` user ids that live in ``shard``."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        if shard_of(f"user-{i}", n_shards) == shard:
            found.append(f"user-{i}")
        i += 1
    return found


def events(user: str, ids: list[str]) -> list[dict]:
    return [{"event_id": i, "user": user, "item": "318", "signal": "click"} for i in ids]


def test_append_stores_the_events_as_json_and_counts(store: Store):
    user = users_of(1, 4, 1)[0]
    result = store.streams.append_events(1, events(user, ["a", "b", "c"]))
    assert result == (3, 0) and result.accepted == 3
    assert store.streams.length(1) == 3
    assert [store.streams.length(s) for s in (0, 2, 3)] == [0, 0, 0]
    batch = store.streams.read_batch(1, "t", block_ms=0)
    assert [e.event["event_id"] for e in batch] == ["a", "b", "c"]
    assert batch.entries[0].event == events(user, ["a"])[0]
    raw = store.client.xrange("fl:{s1}:stream")
    assert list(raw[0][1]) == [b"e"]


def test_a_retried_batch_is_deduplicated(store: Store):
    user = users_of(2, 4, 1)[0]
    assert store.streams.append_events(2, events(user, ["e1", "e2", "e3"])) == (3, 0)
    # the client did not get our answer and sends the batch again, with one new event
    assert store.streams.append_events(2, events(user, ["e1", "e2", "e3", "e4"])) == (1, 3)
    # duplicates inside one batch count once
    assert store.streams.append_events(2, events(user, ["e5", "e5"])) == (1, 1)
    assert store.streams.length(2) == 5


def test_dedupe_window_spans_at_least_one_window(redis_url):
    with Store.from_url(redis_url, n_shards=1, dedupe_window_s=100) as store:
        evs = events("u", ["x"])
        assert store.streams.append_events(0, evs, now=1050.0) == (1, 0)
        assert store.streams.append_events(0, evs, now=1150.0) == (0, 1)  # next window: seen
        assert store.streams.append_events(0, evs, now=1250.0) == (1, 0)  # two windows on
        ttl = store.client.ttl("fl:{s0}:seen:12")
        assert 100 < ttl <= 200


def test_a_full_stream_refuses_the_whole_batch_and_writes_nothing(redis_url):
    with Store.from_url(redis_url, n_shards=1, stream_maxlen=5) as store:
        assert store.streams.append_events(0, events("u", ["a", "b", "c"])) == (3, 0)
        with pytest.raises(StreamFullError) as info:
            store.streams.append_events(0, events("u", ["c", "d", "e", "f"]))
        err = info.value
        assert (err.shard, err.length, err.incoming, err.maxlen) == (0, 3, 4, 5)
        assert "retry later" in str(err)
        assert store.streams.length(0) == 3
        # a batch of duplicates only is fine even when full-ish: nothing new to store
        assert store.streams.append_events(0, events("u", ["a"])) == (0, 1)
        assert store.streams.append_events(0, events("u", ["d", "e"])) == (2, 0)
        # the refused events were not remembered as seen: once there is room, they go in
        batch = store.streams.read_batch(0, "t", count=5, block_ms=0)
        assert store.leases.acquire(0, "t", 10_000)
        store.streams.commit_batch(0, owner="t", deltas={}, last_ids={},
                                   entry_ids=batch.ids, base="v0", generation=0)  # fmt: skip
        assert store.streams.trim_acked(0) == 5
        assert store.streams.append_events(0, events("u", ["c", "d", "e", "f"])) == (1, 3)
        assert [e.event["event_id"] for e in store.streams.read_batch(0, "t", block_ms=0)] == ["f"]


def test_events_are_validated_before_any_write(store: Store):
    user = users_of(0, 4, 1)[0]
    other = users_of(1, 4, 1)[0]
    with pytest.raises(ValueError, match=rf"events\[1\].user '{other}' belongs to shard 1, not 0"):
        store.streams.append_events(0, [*events(user, ["a"]), *events(other, ["b"])])
    with pytest.raises(TypeError, match=r"events\[0\].event_id must be a string, got NoneType"):
        store.streams.append_events(0, [{"user": user}])
    with pytest.raises(ValueError, match=r"shard must be an int in 0\.\.3, got 9"):
        store.streams.append_events(9, events(user, ["a"]))
    assert store.streams.append_events(0, []) == (0, 0)
    assert store.client.dbsize() == 0


def test_read_batch_gives_each_entry_to_one_consumer(store: Store):
    user = users_of(3, 4, 1)[0]
    store.streams.append_events(3, events(user, [f"e{i}" for i in range(5)]))
    first = store.streams.read_batch(3, "a", count=3, block_ms=0)
    second = store.streams.read_batch(3, "b", count=3, block_ms=0)
    assert len(first) == 3 and len(second) == 2
    assert not set(first.ids) & set(second.ids)
    assert len(store.streams.read_batch(3, "a", count=3, block_ms=0)) == 0
    assert store.streams.pending_count(3) == 5
    with pytest.raises(ValueError, match=r"block_ms must be an int in 0\.\.10000, got 60000"):
        store.streams.read_batch(3, "a", block_ms=60_000)


def test_claim_recovers_a_dead_consumers_pending_entries(store: Store):
    user = users_of(0, 4, 1)[0]
    store.streams.append_events(0, events(user, ["a", "b", "c", "d"]))
    dead = store.streams.read_batch(0, "dead", count=3, block_ms=0)
    assert [e.event["event_id"] for e in dead] == ["a", "b", "c"]
    # just delivered: not idle for a minute, so nobody may take them yet
    assert len(store.streams.claim(0, "alive", min_idle_ms=60_000)) == 0
    claimed = store.streams.claim(0, "alive", min_idle_ms=0, count=2)
    assert claimed.ids == dead.ids[:2]
    rest = store.streams.claim(0, "alive", min_idle_ms=0)
    assert rest.ids == dead.ids  # XAUTOCLAIM from the start: the two already ours, and "c"
    pending = store.client.xpending_range("fl:{s0}:stream", "trainers", "-", "+", 10)
    assert {p["consumer"] for p in pending} == {b"alive"}
    # the undelivered entry "d" is not pending: claim does not take it, read_batch does
    assert [e.event["event_id"] for e in store.streams.read_batch(0, "alive", block_ms=0)] == ["d"]


def test_deleted_pending_entries_come_back_as_rejected(store: Store):
    user = users_of(0, 4, 1)[0]
    store.streams.append_events(0, events(user, ["a", "b"]))
    dead = store.streams.read_batch(0, "dead", block_ms=0)
    store.client.xdel("fl:{s0}:stream", dead.ids[0])  # an operator removed it by hand
    claimed = store.streams.claim(0, "alive")
    assert [e.event["event_id"] for e in claimed] == ["b"]
    assert [r.id for r in claimed.rejected] == [dead.ids[0]]
    assert set(claimed.ids) == set(dead.ids)  # committing claimed.ids acknowledges both


def test_trim_keeps_pending_and_undelivered_entries(store: Store):
    user = users_of(1, 4, 1)[0]
    assert store.streams.trim_acked(1) == 0  # no stream yet
    store.streams.append_events(1, events(user, [f"e{i}" for i in range(5)]))
    assert store.streams.trim_acked(1) == 0  # no group yet: nothing acknowledged
    store.streams.ensure_group(1)
    store.streams.ensure_group(1)  # idempotent
    batch = store.streams.read_batch(1, "t", count=3, block_ms=0)
    assert store.leases.acquire(1, "t", 10_000)

    def ack(ids):
        store.streams.commit_batch(1, owner="t", deltas={}, last_ids={}, entry_ids=ids,
                                   base="v0", generation=0)  # fmt: skip

    ack(batch.ids[1:])  # the 2nd and 3rd are done, the 1st still pending
    assert store.streams.trim_acked(1) == 0
    ack(batch.ids[:1])
    assert store.streams.trim_acked(1) == 3  # 4th and 5th were never delivered
    remaining = [e.event["event_id"] for e in store.streams.read_batch(1, "t", block_ms=0)]
    assert remaining == ["e3", "e4"] and store.streams.length(1) == 2
    assert store.streams.trim_acked(1) == 0  # delivered but pending


def test_read_many_waits_on_all_shards_and_wakes_on_the_first_event(store: Store):
    for shard in (0, 1, 2, 3):
        store.streams.ensure_group(shard)
    assert store.streams.read_many([0, 1, 2, 3], "t", block_ms=0) == {}
    user = users_of(2, 4, 1)[0]

    def append_later() -> None:
        time.sleep(0.2)
        store.streams.append_events(2, events(user, ["late"]))

    thread = threading.Thread(target=append_later)
    thread.start()
    # The stream was empty when the read began: it got the event only by waiting for it.
    got = store.streams.read_many([0, 1, 2, 3], "t", block_ms=5000)
    thread.join()
    assert list(got) == [2]
    assert [e.event["event_id"] for e in got[2]] == ["late"]
    assert store.streams.pending_count(2) == 1  # pending until a commit acknowledges it


def test_read_many_refuses_bad_arguments_before_any_read(store: Store):
    with pytest.raises(ValueError, match="shard"):
        store.streams.read_many([0, 9], "t", block_ms=0)
    with pytest.raises(ValueError, match=r"block_ms must be an int in 0\.\.10000, got -1"):
        store.streams.read_many([0], "t", block_ms=-1)
