"""The rebase after promotion against a real redis-server and a real trainer: the entry goes
through the user's shard stream, the trainer applies it once, the API rebases on the fly until
it did, and a crash between publishing and rebasing loses nothing and applies nothing twice."""

from __future__ import annotations

import numpy as np
import orjson

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.mapper import map_shard
from fedlearn.aggregate.promote import rebase_shard
from fedlearn.aggregate.rebase import ShareTable
from fedlearn.aggregate.round import RoundStatus
from fedlearn.aggregate.run import begin_round, create_round, reduce_round, run_round_inline
from fedlearn.model import Base, Delta
from fedlearn.model.gating import GateSettings
from fedlearn.model.table import DeltaTable
from fedlearn.serving.base_cache import BaseCache
from fedlearn.serving.clones import load_clone
from fedlearn.serving.ingest import rebase_entry
from fedlearn.store import Store, keys
from fedlearn.store.entries import Entry
from fedlearn.store.streamid import StreamId
from fedlearn.trainer.apply import UserState, apply_batch
from fedlearn.trainer.trainer import Trainer, TrainerConfig
from tests.test_trainer import CLONE, append, publish, run_until, stored_deltas

# Every row a single user changed is folded (so the rebase has whole rows to take out).
CONFIG = AggregationConfig(clip_norm=None, min_users=1, min_row_users=1)
ALONE = "item=only-alice"


def _events(tag: str, n: int = 30) -> list[dict]:
    """Alice alone rates ``only-alice``; everybody rates the shared items."""
    rng = np.random.default_rng(len(tag))
    out = [
        {"event_id": f"{tag}-a{i}", "user": "alice", "item": "only-alice",
         "signal": "click", "ts": 1.7e9 + i}
        for i in range(5)
    ]  # fmt: skip
    for i in range(n):
        out.append(
            {
                "event_id": f"{tag}-{i}",
                "user": f"u{i % 6}",
                "item": str(rng.integers(4)),
                "signal": "click" if rng.random() < 0.5 else "skip",
                "ts": 1.7e9 + 10 + i,
            }
        )
    return out


def _train(store: Store, trainer: Trainer) -> None:
    """Run ``trainer`` until every stream is read and acknowledged."""
    run_until(trainer, lambda: all(_drained(store, s) for s in store.shards))


def _drained(store: Store, shard: int) -> bool:
    stream = keys.stream(shard)
    if not store.client.exists(stream) or not store.client.xlen(stream):
        return True
    last = store.client.xinfo_stream(stream)["last-generated-id"]
    groups = store.client.xinfo_groups(stream)
    return bool(groups) and all(
        g["last-delivered-id"] == last and g["pending"] == 0 for g in groups
    )


def _clone_row(base: Base, delta: Delta, name: str) -> np.ndarray:
    bw, bv = base.rows([name])
    dw, dv = delta.lookup([name])
    return np.concatenate([bw + dw, (bv + dv).ravel()])


def _setup(store: Store) -> tuple[Base, Trainer, set[str]]:
    base = Base.fresh([f"item={i}" for i in range(4)], 4, version="1")
    publish(store, base)
    events = _events("first")
    append(store, events)
    trainer = Trainer(store, lambda _base: CLONE, TrainerConfig(batch_size=64))
    users = {e["user"] for e in events}
    _train(store, trainer)
    return base, trainer, users


def _publish_without_promoting(store: Store) -> dict:
    """A round mapped and reduced (its base published), its promotion not run: the round's
    record, status PUBLISHED."""
    rounds = store.rounds
    round_id = create_round(rounds, CONFIG)
    assert begin_round(store, rounds, round_id)
    for shard in store.shards:
        map_shard(store, rounds, round_id, shard)
    reduce_round(store, rounds, round_id)
    record = rounds.get(round_id)
    assert record is not None and record["status"] == RoundStatus.PUBLISHED
    return record


def test_a_user_alone_on_a_row_does_not_get_it_twice_and_the_api_agrees_before_the_trainer(
    store: Store,
) -> None:
    base, trainer, users = _setup(store)
    before = stored_deltas(store, users)
    record = run_round_inline(store, CONFIG)
    assert record["status"] == RoundStatus.DONE, record
    new = Base.from_bytes(store.bases.get_base(store.bases.current_version()))
    assert ALONE in new.index  # alice's row was folded into the base
    # The trainer has not read the rebase entries yet: the API rebases on the fly.
    served = load_clone(store, BaseCache(store), "alice", gating=GateSettings()).delta
    assert ALONE not in served.index
    np.testing.assert_allclose(
        _clone_row(new, served, ALONE), _clone_row(base, before["alice"], ALONE), atol=1e-6
    )
    version = new.version
    noted = sum(store.client.hlen(keys.rebase_notes(s, version)) for s in store.shards)
    assert noted == len(users)  # one note per participant, for the API until the trainer
    _train(store, trainer)
    # Past their entries, the notes were dropped by the trainer (not left to their TTL)...
    assert sum(store.client.hlen(keys.rebase_notes(s, version)) for s in store.shards) == 0
    after = stored_deltas(store, users)
    assert ALONE not in after["alice"].index  # the row became zero: dropped
    np.testing.assert_allclose(
        _clone_row(new, after["alice"], ALONE), _clone_row(base, before["alice"], ALONE), atol=1e-6
    )
    for user in users:  # ...and the API serves what the trainer stored, with no note left
        names = sorted(after[user].names)
        served = load_clone(store, BaseCache(store), user, gating=GateSettings()).delta
        assert sorted(served.names) == names
        np.testing.assert_allclose(served.lookup(names)[0], after[user].lookup(names)[0], atol=1e-6)
    # The snapshots were rebased too: without new events, the next round has nothing to fold.
    assert run_round_inline(store, CONFIG)["result"]["users"] == 0


def test_a_crash_between_publishing_and_rebasing_loses_nothing_and_applies_nothing_twice(
    store: Store,
) -> None:
    base, trainer, users = _setup(store)
    before = stored_deltas(store, users)
    rounds = store.rounds
    record = _publish_without_promoting(store)
    round_id = record["id"]
    table = ShareTable.from_bytes(rounds.get_shares(record["new_version"]) or b"")
    # The promotion dies after sending the rebases of the first shard, before any snapshot.
    first = store.shard_of("alice")
    assert rebase_shard(store, rounds, record, first, table, CONFIG) > 0
    rounds.release_lock(round_id)
    # The next round finishes the published one (resending shard 0's entries: duplicates).
    assert run_round_inline(store, CONFIG)["status"] in (RoundStatus.DONE, RoundStatus.SKIPPED)
    assert rounds.get(round_id)["status"] == RoundStatus.DONE  # type: ignore[index]
    rebases = [e for s in store.shards for _, e in _entries(store, s) if e.get("type") == "rebase"]
    participants = {e["user"] for e in rebases}
    assert len(rebases) == len(participants) == len(users)  # one entry per user, never two
    _train(store, trainer)
    once = stored_deltas(store, users)
    new = Base.from_bytes(store.bases.get_base(record["new_version"]))
    np.testing.assert_allclose(
        _clone_row(new, once["alice"], ALONE), _clone_row(base, before["alice"], ALONE), atol=1e-6
    )


def test_the_trainer_applies_a_rebase_entry_once_in_order_with_the_users_events() -> None:
    base = Base.fresh(["item=1"], 4, version="2")
    delta = Delta.from_rows(4, ["item=1", "item=2"], [0.5, 0.25], np.full((2, 4), 0.1), 0.3)
    share = Delta.from_rows(4, ["item=2"], [0.25], np.full((1, 4), 0.1), 0.1)
    rebase_at = Entry("5-0", rebase_entry("a", "2", 0, share.to_json()))
    later = Entry("6-0", {"user": "a", "item": "1", "signal": "click"})
    table = DeltaTable(4)
    table.put("a", delta)
    states = {"a": UserState(StreamId(4, 0))}
    out = apply_batch(
        base, table, states, [rebase_at, later], CLONE, item_features=lambda _i: None,
        prediction_features=lambda _p, _i: None, applied_at=0.0,
    )  # fmt: skip
    assert out.rebased == 1 and out.applied == 1
    assert out.users["a"].last_event == StreamId(6, 0)
    assert "item=2" not in table.delta("a").index  # taken out whole: dropped
    assert states["a"].last_event == StreamId(4, 0)  # the trainer's state is replaced on commit
    # Redelivered after a crash (its id is not past the user's last_event): skipped.
    redelivered = apply_batch(
        base, table, {"a": out.users["a"]}, [rebase_at], CLONE, item_features=lambda _i: None,
        prediction_features=lambda _p, _i: None, applied_at=0.0,
    )  # fmt: skip
    assert redelivered.skipped == 1 and redelivered.rebased == 0 and not redelivered.users


def _entries(store: Store, shard: int) -> list[tuple[str, dict]]:
    raw = store.client.xrange(keys.stream(shard))
    return [(i, orjson.loads(fields[b"e"])) for i, fields in raw]


def test_a_rebase_of_another_generation_or_after_a_forget_changes_nothing() -> None:
    base = Base.fresh(["item=1"], 4, version="9")  # generation 0
    delta = Delta.from_rows(4, ["item=2"], [0.25], np.full((1, 4), 0.1), 0.3)
    share = Delta.from_rows(4, ["item=2"], [0.25], np.full((1, 4), 0.1), 0.1)
    old = Entry("5-0", rebase_entry("a", "2", 1, share.to_json()))
    table = DeltaTable(4)
    table.put("a", delta)
    out = apply_batch(
        base, table, {"a": UserState(StreamId(4, 0))}, [old], CLONE,
        item_features=lambda _i: None, prediction_features=lambda _p, _i: None, applied_at=0.0,
    )  # fmt: skip
    assert out.users["a"].last_event == StreamId(5, 0)  # consumed, once
    np.testing.assert_array_equal(table.delta("a").w, delta.w)
    forget = Entry("6-0", {"event_id": "f", "user": "a", "type": "forget", "ts": 0.0})
    after = Entry("7-0", rebase_entry("a", "2", 0, share.to_json()))
    table.put("a", delta)
    out = apply_batch(
        base, table, {"a": UserState(StreamId(4, 0))}, [forget, after], CLONE,
        item_features=lambda _i: None, prediction_features=lambda _p, _i: None, applied_at=0.0,
    )  # fmt: skip
    assert len(table.delta("a")) == 0 and table.delta("a").w0 == 0.0  # erased stays so
    assert out.users["a"].last_event == StreamId(7, 0)  # a redelivery skips it


def test_the_next_rounds_map_rebases_a_lagging_trainers_delta_on_the_fly(store: Store) -> None:
    """The promotion's rebase entries land behind events the trainer has already applied, and
    the trainer has not read them when the next round maps: the map takes the user's share
    out itself (from the round's note), or it would fold alice's lone row a second time."""
    _, trainer, _ = _setup(store)
    rounds = store.rounds
    published = _publish_without_promoting(store)
    round_id = published["id"]
    # Alice learns more, on other items, before the promotion sends her rebase entry.
    later = [
        {"event_id": f"later-{i}", "user": "alice", "item": str(i % 4), "signal": "skip",
         "ts": 1.8e9 + i}
        for i in range(4)
    ]  # fmt: skip
    append(store, later)
    _train(store, trainer)
    rounds.release_lock(round_id)
    # The next round finishes the promotion (alice's rebase entry now waits behind her
    # events, unread), then folds what was learned since: alice's lone row did not move.
    record = run_round_inline(store, CONFIG)
    assert rounds.get(round_id)["status"] == RoundStatus.DONE  # type: ignore[index]
    assert record["status"] == RoundStatus.DONE, record
    first = Base.from_bytes(store.bases.get_base(published["new_version"]))
    second = Base.from_bytes(store.bases.get_base(store.bases.current_version()))
    assert second.version != first.version
    np.testing.assert_allclose(
        np.concatenate([w.ravel() for w in second.rows([ALONE])]),
        np.concatenate([w.ravel() for w in first.rows([ALONE])]),
        atol=1e-6,
    )


def test_the_rebase_notes_of_a_new_lineage_are_read_before_they_are_served(
    store: Store, round_trips: list[int]
) -> None:
    """The one read guesses which promotions' notes to ask for from the base served last;
    after a round the guess is wrong once (a second read), and the answer is the same as a
    fresh process's, the user's share taken out on the fly."""
    _setup(store)
    cache = BaseCache(store)
    load_clone(store, cache, "alice", gating=GateSettings())
    assert run_round_inline(store, CONFIG)["status"] == RoundStatus.DONE
    fresh = load_clone(store, BaseCache(store), "alice", gating=GateSettings())
    assert ALONE not in fresh.delta.index  # the trainer has not rebased: the API did
    cache.get(fresh.base.version)  # its bytes, read once (not what is counted)
    for trips in (2, 1):  # the old lineage guessed, then the new one
        round_trips[0] = 0
        served = load_clone(store, cache, "alice", gating=GateSettings())
        assert round_trips[0] == trips
        assert served.base.version == fresh.base.version
        assert served.delta.names == fresh.delta.names
        assert (served.delta.v == fresh.delta.v).all()
