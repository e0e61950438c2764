"""commit_batch: all or nothing, fenced by the lease, idempotent on resend, exactly-once."""

from __future__ import annotations

import struct

import pytest
import redis

from fedlearn.store import (
    Batch,
    LeaseLostError,
    StaleCommitError,
    Store,
    StreamId,
    already_applied,
    keys,
    shard_of,
)
from fedlearn.store.commit import commit_args
from fedlearn.store.scripts import Scripts

SHARD = 2


def fldl(events: int, tail: bytes = b"") -> bytes:
    """A .fldl delta header (CONTRACTS.md) with no rows that has seen ``events`` events."""
    return struct.pack("<4sIIIdQI", b"FLDL", 1, 0, 0, 0.0, events, 0) + tail


def users_of(shard: int, count: int, n_shards: int = 4) -> list[str]:
    found = [f"u{i}" for i in range(1000) if shard_of(f"u{i}", n_shards) == shard]
    return found[:count]


def fill(store: Store, per_user: dict[str, int]) -> None:
    evs = [
        {"event_id": f"{user}-{i}", "user": user, "n": i}
        for user, n in per_user.items()
        for i in range(n)
    ]
    store.streams.append_events(SHARD, evs)


def read_leased(store: Store, per_user: dict[str, int], owner: str = "t") -> Batch:
    """What a trainer starts from: ``per_user`` events in the shard's stream, the shard's
    lease held by ``owner``, and the batch it read."""
    fill(store, per_user)
    assert store.leases.acquire(SHARD, owner, 30_000)
    return store.streams.read_batch(SHARD, owner, block_ms=0)


def one_user_batch(store: Store, events: int, owner: str = "t") -> tuple[str, Batch]:
    """One user's ``events`` in the shard's stream, read by ``owner`` under its lease."""
    (user,) = users_of(SHARD, 1)
    return user, read_leased(store, {user: events}, owner)


def apply(store: Store, batch, owner: str, known: dict[str, int] | None = None):
    """What a trainer does: skip applied entries, count events per user, commit."""
    users = sorted({e.event["user"] for e in batch})
    records = store.deltas.get_many(SHARD, users)
    counts = {u: records[u].events if u in records else 0 for u in users}
    last: dict[str, str] = {}
    logged = []
    for entry in batch:
        user = entry.event["user"]
        stored = records.get(user)
        if stored and already_applied(entry.id, stored.last_event):
            continue
        counts[user] += 1
        last[user] = entry.id
        logged.append({**entry.event, "p": 0.5})
    return store.streams.commit_batch(
        SHARD, owner=owner, deltas={u: fldl(counts[u]) for u in last}, last_ids=last,
        entry_ids=batch.ids, log_entries=logged, base="v1", generation=3,
    )  # fmt: skip


def test_commit_writes_deltas_acks_and_logs(store: Store):
    a, b = users_of(SHARD, 2)
    batch = read_leased(store, {a: 2, b: 1}, "t1")
    result = apply(store, batch, "t1")
    assert (result.users, result.acked, result.logged, result.replayed) == (2, 3, 3, False)

    records = store.deltas.get_many(SHARD, [a, b, users_of(SHARD, 3)[2]])
    assert set(records) == {a, b}
    assert records[a].events == 2 and records[b].events == 1
    assert str(records[a].last_event) == batch.ids[1]
    assert (records[a].base, records[a].generation) == ("v1", 3)
    assert records[a].delta == fldl(2)
    assert store.streams.pending_count(SHARD) == 0
    log = store.applied.read(SHARD)
    assert [e.event["event_id"] for e in log] == [f"{a}-0", f"{a}-1", f"{b}-0"]
    assert log.entries[0].event["p"] == 0.5


def test_a_trainer_that_lost_its_lease_cannot_commit(store: Store):
    a, batch = one_user_batch(store, 3, "old")
    store.client.delete(keys.lease(SHARD))  # the lease expired while "old" was paused
    assert store.leases.acquire(SHARD, "new", 30_000)

    with pytest.raises(LeaseLostError) as info:
        apply(store, batch, "old")
    assert (info.value.shard, info.value.owner, info.value.holder) == (SHARD, "old", "new")
    assert "held by 'new', not by 'old'" in str(info.value)
    # nothing written: no delta, nothing acked, nothing logged
    assert store.deltas.get_many(SHARD, [a]) == {}
    assert store.streams.pending_count(SHARD) == 3
    assert store.applied.length(SHARD) == 0

    # the new owner takes the pending entries over and applies each event once
    claimed = store.streams.claim(SHARD, "new")
    assert claimed.ids == batch.ids
    apply(store, claimed, "new")
    assert store.deltas.get(SHARD, a).events == 3
    assert store.applied.length(SHARD) == 3

    store.client.delete(keys.lease(SHARD))
    with pytest.raises(LeaseLostError, match="held by nobody"):
        apply(store, claimed, "new")


def test_a_stale_user_refuses_the_whole_commit(store: Store):
    a, b = users_of(SHARD, 2)
    first = read_leased(store, {a: 2})
    apply(store, first, "t")
    fill(store, {b: 1})
    second = store.streams.read_batch(SHARD, "t", block_ms=0)
    with pytest.raises(StaleCommitError) as info:
        # a buggy trainer re-applies a's first event together with b's new one
        store.streams.commit_batch(
            SHARD, owner="t", deltas={b: fldl(1), a: fldl(3)},
            last_ids={b: second.ids[0], a: first.ids[0]}, entry_ids=second.ids,
            log_entries=[{"x": 1}], base="v1", generation=3,
        )  # fmt: skip
    err = info.value
    assert (err.user, err.stored, err.new) == (a, first.ids[1], first.ids[0])
    # b was checked first but is not written either, and nothing was acked or logged
    assert store.deltas.get(SHARD, b) is None
    assert store.deltas.get(SHARD, a).events == 2
    assert store.streams.pending_count(SHARD) == 1
    assert store.applied.length(SHARD) == 2


def test_a_resent_commit_is_a_no_op(store: Store):
    a, batch = one_user_batch(store, 1)
    built = commit_args(
        SHARD, store.n_shards, owner="t", group="trainers", deltas={a: fldl(1)},
        last_ids={a: batch.ids[0]}, entry_ids=batch.ids, log_entries=[{"e": 1}],
        base="v1", generation=0, events=None,
    )  # fmt: skip
    scripts = Scripts.register(store.client)
    # what redis-py's retry does when the reply of the first attempt was lost
    assert scripts.commit_batch(keys=built.keys, args=built.args) == [b"OK", 1]
    assert scripts.commit_batch(keys=built.keys, args=built.args) == [b"DUP"]
    assert store.applied.length(SHARD) == 1


def test_ids_that_do_not_split_into_their_count_write_nothing(store: Store):
    """The ids travel joined in one argument; the script counts them before any write."""
    a, batch = one_user_batch(store, 2)
    built = commit_args(
        SHARD, store.n_shards, owner="t", group="trainers", deltas={a: fldl(2)},
        last_ids={a: batch.ids[-1]}, entry_ids=batch.ids, log_entries=[{"e": 1}],
        base="v1", generation=0, events=None,
    )  # fmt: skip
    args = list(built.args)
    args[6] = 3  # n_ids: one more than the joined argument holds
    with pytest.raises(redis.ResponseError, match="2 entry ids, not 3"):
        Scripts.register(store.client).commit_batch(keys=built.keys, args=args)
    assert store.deltas.get(SHARD, a) is None
    assert store.streams.pending_count(SHARD) == 2
    assert store.applied.length(SHARD) == 0


def test_an_entry_with_bytes_lines_is_read_back_as_written(store: Store):
    """Lines already encoded are stored after a header, not escaped into a JSON string."""
    a, batch = one_user_batch(store, 1)
    lines = b'{"user":"a","text":"two\\nlines"}\n{"user":"b"}'
    entry = {"applied_at": 1.5, "lines": lines}
    store.streams.commit_batch(
        SHARD, owner="t", deltas={a: fldl(1)}, last_ids={a: batch.ids[0]},
        entry_ids=batch.ids, log_entries=[entry, {"e": 1}], base="v1", generation=0,
    )  # fmt: skip
    read = store.applied.read(SHARD)
    assert [e.event for e in read.entries] == [entry, {"e": 1}] and not read.rejected
    raw = store.client.xrange(keys.applied(SHARD))[0][1][b"e"]
    assert raw == b'{"applied_at":1.5}\n' + lines


def test_redelivered_entries_are_skipped_by_id(store: Store):
    a, batch = one_user_batch(store, 3)
    # the first two were applied by an earlier commit that also recorded last_event ...
    store.streams.commit_batch(
        SHARD, owner="t", deltas={a: fldl(2)}, last_ids={a: batch.ids[1]},
        entry_ids=[], base="v1", generation=0,
    )  # fmt: skip
    # ... and the whole batch comes back: only the third may be applied
    apply(store, store.streams.claim(SHARD, "t"), "t")
    record = store.deltas.get(SHARD, a)
    assert record.events == 3 and record.last_event == StreamId.parse(batch.ids[2])


def test_events_default_to_the_delta_header_and_can_be_given(store: Store):
    a, b = users_of(SHARD, 2)
    assert store.leases.acquire(SHARD, "t", 30_000)
    store.streams.commit_batch(
        SHARD, owner="t", deltas={a: fldl(7, b"rows"), b: fldl(1)},
        last_ids={a: "5-0", b: "5-1"}, entry_ids=["5-0", "5-1"], base="v1", generation=0,
        events={a: 7, b: 40},
    )  # fmt: skip
    records = store.deltas.get_many(SHARD, [a, b])
    assert (records[a].events, records[b].events) == (7, 40)
    assert records[a].delta == fldl(7, b"rows")


def test_each_users_values_are_stored_byte_for_byte(store: Store):
    """A user's values travel packed in one msgpack argument: any byte of a delta or a gate,
    a non-ASCII user id and a count past 2^53 come out in Redis exactly as given."""
    user = next(u for u in (f"ü-{i}" for i in range(100)) if shard_of(u, 4) == SHARD)
    assert store.leases.acquire(SHARD, "t", 30_000)
    delta, gate, events = fldl(3, bytes(range(256)) * 40), b"\0\xff\n" * 9 + b"\x80", 2**53 + 1
    store.streams.commit_batch(
        SHARD, owner="t", deltas={user: delta}, last_ids={user: "18446744073709551615-7"},
        entry_ids=[], base="v1", generation=2, events={user: events}, gates={user: gate},
    )  # fmt: skip
    stored = store.client.hgetall(keys.delta(SHARD, user))
    assert stored == {
        b"delta": delta, b"last_event": b"18446744073709551615-7", b"base": b"v1",
        b"generation": b"2", b"events": str(events).encode(), b"gate": gate,
    }  # fmt: skip
    assert store.client.smembers(keys.users(SHARD)) == {user.encode("utf-8")}


def test_users_that_do_not_unpack_to_their_count_write_nothing(store: Store):
    a, batch = one_user_batch(store, 1)
    built = commit_args(
        SHARD, store.n_shards, owner="t", group="trainers", deltas={a: fldl(1)},
        last_ids={a: batch.ids[0]}, entry_ids=batch.ids, log_entries=[], base="v1",
        generation=0, events=None,
    )  # fmt: skip
    args = list(built.args)
    args[5] = 2  # n_users: one more than the packed argument holds
    with pytest.raises(redis.ResponseError, match="1 users packed, not 2"):
        Scripts.register(store.client).commit_batch(keys=built.keys, args=args)
    assert store.deltas.get(SHARD, a) is None and store.streams.pending_count(SHARD) == 1


USER = users_of(SHARD, 1)[0]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"deltas": {USER: b"not a delta header at all!!!!!"}}, ValueError, "not a .fldl delta"),
        ({"deltas": {USER: "str"}}, TypeError, rf"deltas\['{USER}'\] must be bytes"),
        ({"last_ids": {}}, ValueError, rf"last_ids has no entry for users \['{USER}'\]"),
        ({"last_ids": {USER: "x-1"}}, ValueError, "stream id must look like"),
        ({"events": {}}, ValueError, f"events has no count for user '{USER}'"),
        ({"generation": -1}, ValueError, "generation must be an int >= 0, got -1"),
        ({"base": "v 1"}, ValueError, "base version must be"),
        ({"owner": ""}, ValueError, "owner must be 1..128 characters"),
        ({"deltas": {}, "last_ids": {}, "entry_ids": []}, ValueError, "needs entry_ids or"),
        # Ids are checked in one regex over the batch: one with a newline is not two ids.
        ({"entry_ids": ["1-0", "2-0\n3-0"]}, ValueError, "stream id must look like"),
        ({"entry_ids": ["1-0", b"2-0", "x"]}, ValueError, "stream id must look like"),
        # Digits of other scripts are digits to a regex's \\d, not to Redis's XACK.
        ({"entry_ids": ["1-0", "\u0661-\u0660"]}, ValueError, "stream id must look like"),
        ({"last_ids": {USER: "\u0661-\u0660"}}, ValueError, "stream id must look like"),
    ],
)
def test_arguments_are_checked_before_any_write(store: Store, kwargs, error, message):
    args = {
        "owner": "t", "deltas": {USER: fldl(1)}, "last_ids": {USER: "1-0"},
        "entry_ids": ["1-0"], "base": "v1", "generation": 0, **kwargs,
    }  # fmt: skip
    with pytest.raises(error, match=message):
        store.streams.commit_batch(SHARD, **args)
    assert store.client.dbsize() == 0


def test_users_of_other_shards_are_refused(store: Store):
    (other,) = users_of(SHARD + 1, 1)
    store.leases.acquire(SHARD, "t", 30_000)
    with pytest.raises(ValueError, match=f"user '{other}' belongs to shard 3, not 2"):
        store.streams.commit_batch(
            SHARD, owner="t", deltas={other: fldl(1)}, last_ids={other: "1-0"},
            entry_ids=["1-0"], base="v1", generation=0,
        )  # fmt: skip


def test_commits_of_several_shards_in_one_round_trip_answer_each_on_its_own(
    store: Store, round_trips: list[int]
) -> None:
    """``commit_batches``: one shard whose lease is gone answers LeaseLostError and writes
    nothing; the other commits. Sent after a SCRIPT FLUSH (a restarted Redis), the scripts
    Redis no longer knows are sent again whole."""
    (user,) = users_of(SHARD, 1)
    batch = read_leased(store, {user: 2})
    other_shard = 3
    (other,) = users_of(other_shard, 1)
    store.streams.append_events(other_shard, [{"event_id": "o-1", "user": other, "n": 0}])
    assert store.leases.acquire(other_shard, "someone-else", 30_000)
    other_batch = store.streams.read_batch(other_shard, "t", block_ms=0)
    store.client.script_flush()
    commit = {"owner": "t", "base": "b1", "generation": 0}
    round_trips[0] = 0
    answers = store.streams.commit_batches(
        [
            {**commit, "shard": SHARD, "deltas": {user: fldl(2)},
             "last_ids": {user: batch.ids[-1]}, "entry_ids": batch.ids},
            {**commit, "shard": other_shard, "deltas": {other: fldl(1)},
             "last_ids": {other: other_batch.ids[-1]}, "entry_ids": other_batch.ids},
        ]
    )  # fmt: skip
    assert round_trips[0] >= 2  # EVALSHA both (NOSCRIPT after the flush), then each again
    assert answers[0].users == 1 and answers[0].acked == 2
    assert isinstance(answers[1], LeaseLostError)
    assert store.deltas.get(SHARD, user).events == 2
    assert store.deltas.get(other_shard, other) is None
    assert store.streams.pending_count(other_shard) == 1
    round_trips[0] = 0
    again = store.streams.commit_batches(
        [{**commit, "shard": SHARD, "deltas": {user: fldl(3)},
          "last_ids": {user: "99999999999999-0"}, "entry_ids": []}]
    )  # fmt: skip
    assert round_trips[0] == 1 and again[0].users == 1  # the script is known again
