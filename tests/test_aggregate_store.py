"""Rounds against a real Redis, step by step in this process: what gets published, and that
nothing is counted twice or lost when steps repeat, die half-way or race."""

from __future__ import annotations

import numpy as np
import pytest

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.mapper import map_shard
from fedlearn.aggregate.run import (
    begin_round,
    create_round,
    promote_round,
    reduce_round,
    rounds_of,
    run_round_inline,
)
from fedlearn.aggregate.snapshots import Snapshot
from fedlearn.aggregate.synthetic import publish, write_deltas
from fedlearn.model import Base, Delta
from fedlearn.store import Store, StreamId
from fedlearn.store.rounds import Rounds

K = 2
CONFIG = AggregationConfig(
    strategy="fedavg", clip_norm=None, min_users=1, min_row_users=1, buckets=3
)


def publish_base(store: Store) -> Base:
    return publish(store, Base.fresh(["item=a", "item=b"], K, version="1"), {"kind": "test"})


def delta(rows: dict[str, float], events: int, w0: float = 0.0) -> Delta:
    """A delta moving each row's weight (and its first latent factor, by half as much)."""
    d = Delta(K)
    for name, value in rows.items():
        (r,) = d.rows_of([name])
        d._w[r], d._v[r, 0] = value, value / 2
    d.w0, d.n_events = w0, events
    return d


def current(store: Store) -> Base:
    return Base.from_bytes(store.bases.get_base(store.bases.current_version() or ""))


def row(base: Base, name: str) -> tuple[float, float]:
    i = base.index[name]
    return float(base.w[i]), float(base.v[i, 0])


def test_a_round_publishes_the_weighted_mean_of_touched_rows(store: Store) -> None:
    base = publish_base(store)
    write_deltas(
        store,
        {
            "u1": delta({"item=a": 1.0}, events=2, w0=0.2),
            "u2": delta({"item=a": 3.0, "item=new": 4.0}, events=6),
        },
        base="1",
    )
    record = run_round_inline(store, CONFIG)
    assert record["status"] == "done"
    new = current(store)
    assert new.version == "2" and record["result"]["version"] == "2"
    assert row(new, "item=a")[0] == pytest.approx((2 * 1 + 6 * 3) / 8)
    assert row(new, "item=a")[1] == pytest.approx(base.v[0, 0] + 2.5 / 2, abs=1e-6)
    assert row(new, "item=b") == pytest.approx(row(base, "item=b"))  # nobody touched it
    start = base.rows(["item=new"])[1][0, 0]  # where a clone started the unseen feature
    assert row(new, "item=new") == pytest.approx((4.0, start + 2.0), abs=1e-6)
    assert new.w0 == pytest.approx(0.2)  # only u1 moved its intercept
    meta = store.bases.meta("2")
    assert meta["users"] == 2 and meta["events"] == 8 and meta["round"] == record["id"]
    assert meta["strategy"] == {"name": "fedavg", "noise_multiplier": 0.0}
    assert new.meta["generation"] == 0 and new.meta["parent"] == "1"
    assert store.bases.history()[-1].meta["new_rows"] == 1


def test_the_next_round_counts_only_what_was_learned_since(store: Store) -> None:
    publish_base(store)
    write_deltas(
        store, {"u1": delta({"item=a": 1.0}, 2), "u2": delta({"item=b": 1.0}, 2)}, base="1"
    )
    run_round_inline(store, CONFIG)
    assert run_round_inline(store, CONFIG)["status"] == "skipped"  # nothing new
    assert store.bases.current_version() == "2"
    # u1 was alone on item=a: the rebase took it all out of its delta (0), it learned 0.5 since
    write_deltas(store, {"u1": delta({"item=a": 0.5}, 5)}, base="1")
    record = run_round_inline(store, CONFIG)
    assert record["result"]["users"] == 1 and record["result"]["events"] == 3
    assert row(current(store), "item=a")[0] == pytest.approx(1.0 + 0.5)
    assert row(current(store), "item=b")[0] == pytest.approx(1.0)


def test_too_few_users_publish_nothing_and_their_changes_wait(store: Store) -> None:
    publish_base(store)
    write_deltas(
        store, {"u1": delta({"item=a": 1.0}, 1), "u2": delta({"item=a": 3.0}, 1)}, base="1"
    )
    record = run_round_inline(store, CONFIG.with_(min_users=3))
    assert record["status"] == "skipped" and "min_users=3" in record["result"]["reason"]
    assert store.bases.current_version() == "1"
    write_deltas(store, {"u3": delta({"item=a": 5.0}, 1)}, base="1")
    record = run_round_inline(store, CONFIG.with_(min_users=3))
    assert record["result"]["users"] == 3
    assert row(current(store), "item=a")[0] == pytest.approx(3.0)


def test_a_duplicated_map_task_counts_the_first_reading_once(store: Store) -> None:
    publish_base(store)
    rounds = rounds_of(store)
    write_deltas(
        store, {"u1": delta({"item=a": 1.0}, 1), "u2": delta({"item=a": 3.0}, 1)}, base="1"
    )
    round_id = create_round(rounds, CONFIG)
    assert begin_round(store, rounds, round_id)
    first = [map_shard(store, rounds, round_id, s) for s in store.shards]
    write_deltas(store, {"u1": delta({"item=a": 9.0}, 2)}, base="1")  # learns meanwhile
    again = [map_shard(store, rounds, round_id, s) for s in store.shards]
    assert all(a.get("duplicate") for a in again)
    assert [a["attempt"] for a in again] == [f["attempt"] for f in first]
    reduce_round(store, rounds, round_id)
    assert reduce_round(store, rounds, round_id)["version"] == "2"  # a re-sent reducer: no-op
    promote_round(store, rounds, round_id)
    promote_round(store, rounds, round_id)
    assert row(current(store), "item=a")[0] == pytest.approx(2.0)
    assert len(store.bases.history()) == 2
    # u1's snapshot is what the round read (1.0) rebased (minus its share, 1.0 * 1/2), so the
    # next round sees 9.0 - 0.5 of change
    record = run_round_inline(store, CONFIG)
    assert record["result"]["users"] == 1
    assert row(current(store), "item=a")[0] == pytest.approx(2.0 + 8.5)


def mapped_round(store: Store) -> tuple[Rounds, str]:
    """A round of two users (``item=a`` moved by 1 and by 3), begun and mapped on every shard."""
    publish_base(store)
    rounds = rounds_of(store)
    write_deltas(
        store, {"u1": delta({"item=a": 1.0}, 1), "u2": delta({"item=a": 3.0}, 1)}, base="1"
    )
    round_id = create_round(rounds, CONFIG)
    begin_round(store, rounds, round_id)
    for s in store.shards:
        map_shard(store, rounds, round_id, s)
    return rounds, round_id


def test_a_round_killed_before_its_reducer_changes_nothing(store: Store) -> None:
    rounds, dead = mapped_round(store)
    store.client.delete(rounds.lock_key())  # the worker died; its lock expired
    assert store.bases.current_version() == "1"
    write_deltas(store, {"u3": delta({"item=a": 8.0}, 1)}, base="1")
    record = run_round_inline(store, CONFIG)
    assert record["result"]["users"] == 3
    assert row(current(store), "item=a")[0] == pytest.approx(4.0)
    assert rounds.get(dead)["status"] == "abandoned"  # type: ignore[index]
    leftovers = [*store.client.scan_iter(match=f"*:cand:{dead}:*")]
    leftovers += [*store.client.scan_iter(match=f"*:part:{dead}")]
    assert leftovers == []
    assert rounds.open_rounds() == []


def test_a_round_published_but_not_promoted_is_finished_by_the_next(store: Store) -> None:
    rounds, first = mapped_round(store)
    reduce_round(store, rounds, first)  # published "2"; the worker dies before promoting
    store.client.delete(rounds.lock_key())
    write_deltas(store, {"u1": delta({"item=a": 2.0}, 2)}, base="1")
    record = run_round_inline(store, CONFIG)
    assert rounds.get(first)["status"] == "done"  # type: ignore[index]
    assert record["result"]["users"] == 1 and record["result"]["parent"] == "2"
    # the snapshot is u1's 1.0 minus its share of the first round (0.5)
    assert row(current(store), "item=a")[0] == pytest.approx(2.0 + 1.5)


def test_one_round_at_a_time(store: Store) -> None:
    publish_base(store)
    rounds = rounds_of(store)
    write_deltas(store, {"u1": delta({"item=a": 1.0}, 1)}, base="1")
    running = create_round(rounds, CONFIG)
    assert begin_round(store, rounds, running)
    other = create_round(rounds, CONFIG)
    assert not begin_round(store, rounds, other)
    record = rounds.get(other)
    assert record is not None and record["status"] == "rejected"
    assert running in record["error"]
    assert rounds.lock_holder() == running


def test_snapshots_never_move_backwards(store: Store) -> None:
    rounds = rounds_of(store)
    shard = store.shard_of("u1")
    newer = Snapshot(0, StreamId(5, 0), 3, b"new").to_bytes()
    older = Snapshot(0, StreamId(4, 9), 2, b"old").to_bytes()
    store.client.hset(rounds.snapshots_key(shard), "u1", newer)
    rounds.write_candidates(shard, "late", "a1", {"u1": older, "u2": older})
    assert rounds.commit_partial(shard, "late", "a1", {"meta": b"{}"}) == "a1"
    assert rounds.commit_partial(shard, "late", "a2", {"meta": b"{}"}) == "a1"
    assert rounds.promote(shard, "late") == 1  # only u2, who had no snapshot
    assert rounds.snapshots(shard, ["u1", "u2"]) == {"u1": newer, "u2": older}
    later_generation = Snapshot(1, StreamId(1, 0), 0, b"g1").to_bytes()
    rounds.write_candidates(shard, "gen", "a", {"u1": later_generation})
    rounds.commit_partial(shard, "gen", "a", {"meta": b"{}"})
    rounds.promote(shard, "gen")
    assert rounds.snapshots(shard, ["u1"])["u1"] == later_generation


def test_rollback_moves_the_pointer_and_ids_are_never_reused(store: Store) -> None:
    publish_base(store)
    write_deltas(store, {"u1": delta({"item=a": 1.0}, 1)}, base="1")
    run_round_inline(store, CONFIG)
    # each round takes u1's change (alone on item=a) out of its delta: it learns from 0 again
    write_deltas(store, {"u1": delta({"item=a": 2.0}, 2)}, base="1")
    run_round_inline(store, CONFIG)
    assert store.bases.current_version() == "3"
    assert store.bases.rollback("2") == "3"
    write_deltas(store, {"u1": delta({"item=a": 1.0}, 3)}, base="1")
    record = run_round_inline(store, CONFIG)
    assert record["result"]["parent"] == "2" and record["result"]["version"] == "4"
    assert row(current(store), "item=a")[0] == pytest.approx(1.0 + 1.0)


def test_deltas_of_another_generation_do_not_contribute(store: Store) -> None:
    publish_base(store)
    write_deltas(store, {"old": delta({"item=a": 7.0}, 1)}, base="1", generation=3)
    write_deltas(store, {"u1": delta({"item=a": 1.0}, 1)}, base="1")
    record = run_round_inline(store, CONFIG)
    assert record["result"]["users"] == 1
    assert row(current(store), "item=a")[0] == pytest.approx(1.0)


def test_fedavgm_momentum_follows_the_published_version(store: Store) -> None:
    publish_base(store)
    config = CONFIG.with_(strategy="fedavgm", server_lr=1.0, momentum=0.5)
    write_deltas(store, {"u1": delta({"item=a": 1.0}, 1)}, base="1")
    run_round_inline(store, config)
    # item=a went into the base and out of u1's delta (rebase); u1 now moves only item=b
    write_deltas(store, {"u1": delta({"item=b": 2.0}, 2)}, base="1")
    run_round_inline(store, config)
    new = current(store)
    assert row(new, "item=a")[0] == pytest.approx(1.0 + 0.5 * 1.0)  # momentum alone
    assert row(new, "item=b")[0] == pytest.approx(2.0)
    assert rounds_of(store).get_momentum("3") is not None


def test_an_unreadable_delta_is_skipped_not_fatal(store: Store) -> None:
    publish_base(store)
    write_deltas(
        store, {"u1": delta({"item=a": 1.0}, 1), "u2": delta({"item=a": 3.0}, 1)}, base="1"
    )
    shard = store.shard_of("u2")
    store.client.hset(f"fl:{{s{shard}}}:delta:u2", "delta", b"FLDL-broken")
    record = run_round_inline(store, CONFIG)
    assert record["result"]["users"] == 1
    assert record["result"]["shards"][str(shard)]["users"] == int(store.shard_of("u1") == shard)
    assert np.isclose(row(current(store), "item=a")[0], 1.0)


def test_rows_moved_by_a_single_user_are_not_published(store: Store) -> None:
    publish_base(store)
    write_deltas(
        store,
        {
            "u1": delta({"item=a": 1.0, "user=u1": 5.0}, 1),
            "u2": delta({"item=a": 3.0, "user=u2": 5.0}, 1),
        },
        base="1",
    )
    record = run_round_inline(store, CONFIG.with_(min_row_users=2))
    new = current(store)
    assert row(new, "item=a")[0] == pytest.approx(2.0)
    assert "user=u1" not in new.index and "user=u2" not in new.index
    assert record["result"]["rows_withheld"] == 2


def test_the_service_s_round_folds_one_user_s_film_but_never_a_user_s_own_row(
    store: Store,
) -> None:
    publish_base(store)
    # u2 and u3 both move u1's own row (sybils): still not published, whatever the count.
    write_deltas(
        store,
        {
            "u1": delta({"item=solo": 2.0, "user=u1": 5.0}, 1),
            "u2": delta({"item=a": 3.0, "user=u1": 5.0}, 1),
            "u3": delta({"item=a": 1.0, "user=u1": 5.0}, 1),
        },
        base="1",
    )
    default = AggregationConfig().min_row_users
    record = run_round_inline(store, CONFIG.with_(min_row_users=default))
    new = current(store)
    assert record["result"]["min_row_users"] == 1
    assert row(new, "item=solo")[0] == pytest.approx(2.0)
    assert "user=u1" not in new.index and record["result"]["rows_withheld"] == 1


@pytest.mark.parametrize("strategy", ["fedavg", "fedavgm", "trimmed_mean", "median"])
def test_the_offline_round_matches_the_service(store: Store, strategy: str) -> None:
    from fedlearn.aggregate.fold import fold_pairs
    from fedlearn.aggregate.synthetic import random_deltas

    base = publish_base(store)
    deltas = random_deltas(np.random.default_rng(4), 30, n_factors=K, n_items=8)
    write_deltas(store, deltas, base="1")
    config = CONFIG.with_(strategy=strategy, clip_norm=0.5, max_weight=20)
    run_round_inline(store, config)
    served = current(store)
    offline, _, summary = fold_pairs(
        base, [(d, None, d.n_events) for d in deltas.values()], config, version="2"
    )
    assert offline is not None and summary["users"] == 30
    assert sorted(offline.features) == sorted(served.features)
    order = [offline.index[n] for n in served.features]
    assert offline.w[order] == pytest.approx(served.w, abs=1e-5)
    assert offline.v[order] == pytest.approx(served.v, abs=1e-5)
    assert offline.w0 == pytest.approx(served.w0, abs=1e-6)


def test_forgetting_a_user_erases_its_snapshot_and_archives(store: Store) -> None:
    rounds = rounds_of(store)
    shard = store.shard_of("u1")
    blob = Snapshot(0, StreamId(1, 0), 1, b"x").to_bytes()
    store.client.hset(rounds.snapshots_key(shard), mapping={"u1": blob, "u2": blob})
    rounds.archive(shard, 0, {"u1": blob})
    assert rounds.forget_user(shard, "u1", generations=range(2)) == 2
    assert rounds.snapshots(shard, ["u1", "u2"]) == {"u2": blob}
    assert rounds.archived(shard, 0) == {}
