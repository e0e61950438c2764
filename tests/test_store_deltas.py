"""Delta records, prediction records and the applied log."""

from __future__ import annotations

import struct

import pytest

from fedlearn.store import Store, StreamId, shard_of


def fldl(events: int) -> bytes:
    return struct.pack("<4sIIIdQI", b"FLDL", 1, 0, 0, 0.0, events, 0)


def users_of(shard: int, count: int) -> list[str]:
    return [f"u{i}" for i in range(2000) if shard_of(f"u{i}", 4) == shard][:count]


def commit(store: Store, shard: int, users: list[str], log: list[dict] | None = None) -> None:
    store.leases.acquire(shard, "t", 30_000)
    ids = [f"{i + 1}-0" for i in range(len(users))]
    store.streams.commit_batch(
        shard, owner="t", deltas={u: fldl(i + 1) for i, u in enumerate(users)},
        last_ids=dict(zip(users, ids, strict=True)), entry_ids=ids, log_entries=log or [],
        base="v1", generation=2,
    )  # fmt: skip


def test_get_many_returns_only_users_with_a_delta(store: Store):
    users = users_of(1, 3)
    commit(store, 1, users[:2])
    records = store.deltas.get_many(1, [users[0], users[2], users[1], users[0]])
    assert list(records) == [users[0], users[1]]
    assert records[users[1]].events == 2
    assert records[users[1]].last_event == StreamId(2, 0)
    assert store.deltas.get(1, users[2]) is None
    assert store.deltas.get_many(1, []) == {}


def test_walking_a_shard_lists_every_user_once(store: Store):
    users = users_of(3, 120)
    commit(store, 3, users)
    assert store.deltas.count(3) == 120
    walked = list(store.deltas.iter_shard(3, batch=7))
    assert sorted(r.user for r in walked) == sorted(users)
    assert sorted(store.deltas.users(3)) == sorted(users)
    assert list(store.deltas.iter_shard(0)) == []


def test_delete_user(store: Store):
    a, b = users_of(0, 2)
    commit(store, 0, [a, b])
    assert store.deltas.delete_user(0, a)
    assert not store.deltas.delete_user(0, a)
    assert store.deltas.get(0, a) is None and store.deltas.get(0, b) is not None
    assert list(store.deltas.users(0)) == [b]


def test_users_are_checked_against_the_shard(store: Store):
    (other,) = users_of(2, 1)
    with pytest.raises(ValueError, match=f"user '{other}' belongs to shard 2, not 1"):
        store.deltas.get_many(1, [other])
    with pytest.raises(ValueError, match=r"user must be 1\.\.128"):
        store.deltas.delete_user(1, "")


def test_applied_log_reads_after_a_cursor_and_trims_through_it(store: Store):
    users = users_of(1, 4)
    commit(store, 1, users, log=[{"user": u, "k": i} for i, u in enumerate(users)])
    everything = store.applied.read(1)
    assert [e.event["k"] for e in everything] == [0, 1, 2, 3]
    after_two = store.applied.read(1, after=everything.ids[1], count=1)
    assert [e.event["k"] for e in after_two] == [2]
    assert store.applied.trim(1, through=everything.ids[1]) == 2
    assert [e.event["k"] for e in store.applied.read(1)] == [2, 3]
    assert store.applied.length(1) == 2
