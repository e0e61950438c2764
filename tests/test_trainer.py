"""The trainer against a real redis-server: exactly-once application, recovery, the event log."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from fedlearn.cli import main
from fedlearn.data.eventlog import day_of, read_log, shard_dir, stamp
from fedlearn.devtools import EmbeddedRedis
from fedlearn.model import Base, Delta, event_features, learn_many
from fedlearn.store import Store, keys
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.eventlog import EventLogWriter
from fedlearn.trainer.trainer import RedisUnreachableError, Trainer, TrainerConfig

CLONE = CloneSettings(lr=0.05, l2=0.01, bias_lr=0.1)


def publish(store: Store, base: Base) -> None:
    store.bases.put_base(base.version, base.to_bytes(), {"generation": 0})
    store.bases.set_current(base.version)


def make_events(n: int, n_users: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "event_id": f"e{i}",
            "user": f"u{rng.integers(n_users)}",
            "item": str(rng.integers(30)),
            "signal": "click" if rng.random() < 0.4 else "skip",
            "ts": 1_700_000_000.0 + i,
            "context": {"hour": str(rng.integers(24))},
        }
        for i in range(n)
    ]


def append(store: Store, events: list[dict]) -> None:
    by_shard: dict[int, list[dict]] = {}
    for event in events:
        by_shard.setdefault(store.shard_of(event["user"]), []).append(event)
    for shard, batch in by_shard.items():
        store.streams.append_events(shard, batch)


def expected_deltas(base: Base, events: list[dict]) -> dict[str, Delta]:
    """What the users' deltas must be: every event applied once, each user's in order."""
    deltas: dict[str, Delta] = {}
    samples = [
        (e["user"], event_features(e["user"], e["item"], e["context"]), int(e["signal"] == "click"))
        for e in events
    ]
    learn_many(base, deltas, samples, CLONE.lr, CLONE.l2, CLONE.bias_lr)
    return deltas


def run_until(trainer: Trainer, done, timeout: float = 20.0) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=trainer.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
    assert done(), "the trainer did not finish in time"


def stored_deltas(store: Store, users: set[str]) -> dict[str, Delta]:
    out = {}
    for user in users:
        record = store.deltas.get(store.shard_of(user), user)
        assert record is not None, f"user {user} has no delta"
        out[user] = Delta.from_bytes(record.delta)
    return out


def assert_same(got: dict[str, Delta], want: dict[str, Delta]) -> None:
    assert set(got) == set(want)
    for user, delta in want.items():
        other = got[user]
        assert other.n_events == delta.n_events, user
        assert sorted(other.names) == sorted(delta.names)
        rows = other.rows_of(delta.names)
        np.testing.assert_allclose(other._w[rows], delta.w, atol=2e-6)
        np.testing.assert_allclose(other._v[rows], delta.v, atol=2e-6)
        assert other.w0 == pytest.approx(delta.w0, abs=2e-6)


def test_every_event_is_applied_once_and_logged(store: Store, tmp_path: Path) -> None:
    base = Base.fresh([f"item={i}" for i in range(20)], 4, version="b1")
    publish(store, base)
    events = make_events(600, 25)
    append(store, events)
    log = EventLogWriter(store, tmp_path / "log")
    trainer = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=64), eventlog=log)
    users = {e["user"] for e in events}

    def applied() -> bool:
        return trainer.applied_total >= len(events)

    run_until(trainer, applied)
    assert_same(stored_deltas(store, users), expected_deltas(base, events))
    records = list(read_log(tmp_path / "log"))
    assert sorted(r["event_id"] for r in records) == sorted(e["event_id"] for e in events)
    assert all(0.0 < r["prediction"] < 1.0 and r["features"] for r in records)
    assert all(store.streams.pending_count(s) == 0 for s in store.shards)


def test_a_batch_torn_in_the_middle_of_its_write_is_written_again_whole(
    store: Store, tmp_path: Path
) -> None:
    """A crash while the writer wrote an entry leaves a prefix of its lines; resuming after
    its log_id (as the last whole line says) lost the rest of the batch."""
    publish(store, Base.fresh([f"item={i}" for i in range(20)], 4, version="b1"))
    events = make_events(200, 8, seed=3)
    append(store, events)
    trainer = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=16))  # no writer
    run_until(trainer, lambda: trainer.applied_total >= len(events))
    shard = max(store.shards, key=store.applied.length)
    entries = store.applied.read(shard).entries
    assert len(entries) >= 2
    whole = b"".join(stamp(entry.event, entry.id)[0] for entry in entries)
    second = stamp(entries[1].event, entries[1].id)[0].split(b"\n")
    assert len(second) > 3
    torn = (
        stamp(entries[0].event, entries[0].id)[0] + b"\n".join(second[:2]) + b"\n" + second[2][:9]
    )
    root = tmp_path / "log"
    folder = shard_dir(root, shard)
    folder.mkdir(parents=True)
    (folder / f"{day_of(entries[0].event['applied_at'])}.jsonl").write_bytes(torn)
    writer = EventLogWriter(store, root)
    while writer.drain(shard):
        pass
    assert b"".join(p.read_bytes() for p in sorted(folder.glob("*.jsonl"))) == whole
    assert store.applied.length(shard) == 0
    # an entry already trimmed was written whole: a new writer resumes after it, cutting nothing
    assert EventLogWriter(store, root).drain(shard) == 0
    assert b"".join(p.read_bytes() for p in sorted(folder.glob("*.jsonl"))) == whole


def test_a_dead_owners_pending_batch_is_redone_once(store: Store, tmp_path: Path) -> None:
    base = Base.fresh([f"item={i}" for i in range(20)], 4, version="b1")
    publish(store, base)
    events = make_events(300, 10, seed=1)
    append(store, events)
    # A trainer that read a batch of every shard and died before committing: the entries are
    # pending for its consumer, and its leases expire.
    for shard in store.shards:
        store.streams.ensure_group(shard)
        assert store.leases.acquire(shard, "dead-trainer", 50)
        store.streams.read_batch(shard, "dead-trainer", count=40, block_ms=0)
    assert sum(store.streams.pending_count(s) for s in store.shards) > 0
    time.sleep(0.1)
    trainer = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=50))
    run_until(trainer, lambda: trainer.applied_total >= len(events))
    assert trainer.applied_total == len(events)
    assert_same(stored_deltas(store, {e["user"] for e in events}), expected_deltas(base, events))


def test_a_redelivered_event_is_skipped(store: Store) -> None:
    base = Base.fresh([f"item={i}" for i in range(5)], 4, version="b1")
    publish(store, base)
    events = make_events(40, 3, seed=2)
    append(store, events)
    trainer = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=100))
    run_until(trainer, lambda: trainer.applied_total >= len(events))
    # Pretend the acknowledgements were lost: put every entry back as new for a fresh group.
    for shard in store.shards:
        store.client.xgroup_setid(f"fl:{{s{shard}}}:stream", "trainers", "0")
    second = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=100))
    second.ownership.maintain()
    for shard in second.owned:
        second.shards[shard].recovering = False
    applied = sum(second.step() for _ in range(3))
    assert applied == 0
    assert_same(stored_deltas(store, {e["user"] for e in events}), expected_deltas(base, events))


def test_a_batch_whose_commit_is_refused_leaves_nothing_of_itself_in_memory(
    store: Store,
) -> None:
    """The shard's table of deltas is updated before the commit; a commit the store refuses
    (the lease went to another owner meanwhile) must not leave those updates behind: when the
    shard comes back, its users are reloaded and each event is applied exactly once."""
    base = Base.fresh([f"item={i}" for i in range(20)], 4, version="b1")
    publish(store, base)
    first, second = make_events(200, 8, seed=3), make_events(200, 8, seed=4)
    for i, event in enumerate(second):
        event["event_id"] = f"later{i}"
    append(store, first)
    trainer = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=500))
    trainer.ownership.maintain()
    while trainer.applied_total < len(first):
        trainer.step()
    append(store, second)
    shard = store.shard_of(second[0]["user"])
    store.client.delete(keys.lease(shard))  # as if it lapsed; another owner takes it
    assert store.leases.acquire(shard, "other-trainer", 60_000)
    assert trainer.work_shard(shard, base) == 0, "the commit is refused"
    assert shard not in trainer.shards and store.streams.pending_count(shard) > 0
    store.leases.release(shard, "other-trainer")
    trainer.ownership.maintain()  # the shard comes back: its users are read from Redis
    while trainer.applied_total < len(first) + len(second):
        assert trainer.step() > 0
    events = first + second
    assert_same(stored_deltas(store, {e["user"] for e in events}), expected_deltas(base, events))


def keeping_up(store: Store, base: Base, events: list[dict]) -> Trainer:
    """A trainer that owns every shard, has applied ``events`` and keeps up: its next pass
    reads all its shards in one XREADGROUP."""
    append(store, events)
    trainer = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=500))
    trainer.ownership.maintain()
    while trainer.applied_total < len(events):
        trainer.step()
    assert trainer.step() == 0 and trainer._can_read_at_once()
    return trainer


def test_a_pass_over_many_shards_makes_a_round_trip_per_kind_not_per_shard(
    store: Store, round_trips: list[int]
) -> None:
    base = Base.fresh([f"item={i}" for i in range(30)], 4, version="b1")
    publish(store, base)
    trainer = keeping_up(store, base, make_events(40, 8, seed=5))
    later = make_events(40, 40, seed=6)  # new users in every shard: their records are read
    for i, event in enumerate(later):
        event["event_id"] = f"later{i}"
    append(store, later)
    assert len({store.shard_of(e["user"]) for e in later}) == store.n_shards
    round_trips[0] = 0
    assert trainer.step() == len(later)
    # the read, the users' records, the catalog's items, the commits: one each
    assert round_trips[0] == 4
    # applied together on one table, committed per shard: what shard by shard gives
    events = make_events(40, 8, seed=5) + later
    assert_same(stored_deltas(store, {e["user"] for e in events}), expected_deltas(base, events))
    logged = [
        (shard, orjson.loads(line))
        for shard in store.shards
        for entry in store.applied.read(shard).entries
        for line in stamp(entry.event, entry.id)[0].splitlines()
    ]
    assert sorted(line["event_id"] for _, line in logged) == sorted(e["event_id"] for e in events)
    assert all(store.shard_of(line["user"]) == shard for shard, line in logged)


def test_a_pass_whose_commit_one_shard_refuses_commits_the_others_and_loses_nothing(
    store: Store,
) -> None:
    """The commits of a pass go in one round trip, each shard's its own script: a lease that
    went to another owner meanwhile refuses that shard's alone, and its events are applied
    exactly once when the shard comes back."""
    base = Base.fresh([f"item={i}" for i in range(30)], 4, version="b1")
    publish(store, base)
    first = make_events(200, 12, seed=7)
    trainer = keeping_up(store, base, first)
    second = make_events(200, 12, seed=8)
    for i, event in enumerate(second):
        event["event_id"] = f"later{i}"
    append(store, second)
    lost = store.shard_of(second[0]["user"])
    store.client.delete(keys.lease(lost))  # as if it lapsed; another owner takes it
    assert store.leases.acquire(lost, "other-trainer", 60_000)
    in_lost = sum(store.shard_of(e["user"]) == lost for e in second)
    assert trainer.step() == len(second) - in_lost
    assert lost not in trainer.shards and store.streams.pending_count(lost) == in_lost
    assert all(store.streams.pending_count(s) == 0 for s in store.shards if s != lost)
    store.leases.release(lost, "other-trainer")
    trainer.ownership.maintain()
    while trainer.applied_total < len(first) + len(second):
        assert trainer.step() > 0
    events = first + second
    assert_same(stored_deltas(store, {e["user"] for e in events}), expected_deltas(base, events))


def dead_letter_count(reason: str) -> float:
    return REGISTRY.get_sample_value("fedlearn_dead_letters_total", {"reason": reason}) or 0.0


def test_poison_entries_and_unreadable_records_are_dead_lettered_and_the_rest_applied(
    store: Store, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = Base.fresh([f"item={i}" for i in range(20)], 4, version="b1")
    publish(store, base)
    events = make_events(300, 8, seed=4)
    broken_delta, broken_gate = events[0]["user"], events[1]["user"]
    assert broken_delta != broken_gate
    shard = store.shard_of(broken_delta)
    store.streams.ensure_group(shard)
    # Records the trainer cannot read: a delta that is no .fldl, a gate of the wrong size.
    store.client.hset(keys.delta(shard, broken_delta), mapping={
        "delta": b"garbage", "last_event": "0-1", "base": "b1", "generation": 0, "events": 7,
    })  # fmt: skip
    gate_shard = store.shard_of(broken_gate)
    store.client.hset(keys.delta(gate_shard, broken_gate), mapping={
        "delta": Delta(4).to_bytes(), "last_event": "0-1", "base": "b1", "generation": 0,
        "gate": b"\x01\x02",
    })  # fmt: skip
    # Entries that are no event; a dead trainer read them and never committed, so they come
    # back through the claim of pending entries, where a restart used to stop again.
    stream = keys.stream(shard)
    store.client.xadd(stream, {"e": b"not json {"})
    store.client.xadd(stream, {"e": orjson.dumps({"user": broken_delta, "item": "1"})})
    store.client.xadd(stream, {"x": b"1"})
    # Events the API would refuse today (a value beyond the model's bound, a reserved context
    # key), written by something else or under older rules: set aside, not raised on.
    for context in ({"a": 1e6}, {"user": "victim"}):
        event = {"user": broken_delta, "item": "1", "signal": "click", "context": context}
        store.client.xadd(stream, {"e": orjson.dumps(event)})
    assert store.leases.acquire(shard, "dead-trainer", 50)
    assert len(store.streams.read_batch(shard, "dead-trainer", block_ms=0)) == 5
    time.sleep(0.1)
    append(store, events)
    before = {kind: dead_letter_count(kind) for kind in ("invalid_entry", "unreadable_delta")}
    trainer = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=64))
    run_until(trainer, lambda: trainer.applied_total >= len(events))

    # Every good event applied once; the broken users restarted from the base.
    assert_same(stored_deltas(store, {e["user"] for e in events}), expected_deltas(base, events))
    assert all(store.streams.pending_count(s) == 0 for s in store.shards)
    letters = store.dead_letters.latest(shard) + (
        store.dead_letters.latest(gate_shard) if gate_shard != shard else []
    )
    by_kind: dict[str, list] = {}
    for letter in letters:
        by_kind.setdefault(letter.kind, []).append(letter)
    assert len(by_kind["invalid_entry"]) == 5
    reasons = " | ".join(letter.reason for letter in by_kind["invalid_entry"])
    for why in (
        "is not JSON",
        "signal must be 'click' or 'skip'",
        "has no field 'e'",
        "'context.a' must be within [-10, 10]",
        "'context' name 'user' is reserved",
    ):
        assert why in reasons
    assert b"not json {" in {letter.raw for letter in by_kind["invalid_entry"]}
    [delta_letter] = by_kind["unreadable_delta"]
    assert delta_letter.user == broken_delta and delta_letter.raw == b"garbage"
    assert delta_letter.reason  # the format's own message (it names what is wrong)
    [gate_letter] = by_kind["unreadable_gate"]
    assert gate_letter.user == broken_gate and gate_letter.raw == b"\x01\x02"
    assert dead_letter_count("invalid_entry") - before["invalid_entry"] == 5
    assert dead_letter_count("unreadable_delta") - before["unreadable_delta"] == 1

    # Operators see them with `fedlearn dead-letters`; its options are checked.
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("FEDLEARN_N_SHARDS", "4")
    listed = CliRunner().invoke(main, ["dead-letters", "--json", "--shard", str(shard)])
    assert listed.exit_code == 0, listed.output
    rows = [orjson.loads(line) for line in listed.output.splitlines()]
    assert {row["kind"] for row in rows} >= {"invalid_entry", "unreadable_delta"}
    assert all(row["reason"] and row["shard"] == shard for row in rows)
    table = CliRunner().invoke(main, ["dead-letters"])
    assert table.exit_code == 0 and "unreadable_delta" in table.output
    wrong = CliRunner().invoke(main, ["dead-letters", "--shard", "4"])
    assert wrong.exit_code == 2 and "FEDLEARN_N_SHARDS=4" in wrong.output
    assert CliRunner().invoke(main, ["dead-letters", "--limit", "0"]).exit_code == 2


def test_a_trainer_whose_redis_dies_stops_with_its_threads(tmp_path: Path) -> None:
    """The event log thread used to be joined forever: the process hung at 0 % CPU."""
    with EmbeddedRedis(tmp_path / "redis") as server, Store.from_url(server.url, 4) as store:
        base = Base.fresh([f"item={i}" for i in range(20)], 4, version="b1")
        publish(store, base)
        append(store, make_events(200, 5, seed=5))
        log = EventLogWriter(store, tmp_path / "log")
        config = TrainerConfig(batch_size=50, eventlog_every_s=0.05, redis_outage_s=1.0)
        trainer = Trainer(store, lambda _base: CLONE, config, eventlog=log)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                trainer.run(threading.Event())
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 20
        while trainer.applied_total < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert trainer.applied_total == 200
        server.kill()
        killed = time.monotonic()
        thread.join(30)
        stopped = time.monotonic() - killed
        print(f"trainer stopped {stopped:.1f} s after its Redis was killed")
        assert not thread.is_alive(), "the trainer hangs after losing Redis"
        assert isinstance(failure[0], RedisUnreachableError), failure
        assert not [t for t in threading.enumerate() if t.name == "eventlog"]
