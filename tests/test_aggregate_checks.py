"""What a round accepts and publishes: poisoned contributions are rejected with their reason,
a candidate base that is not finite and sane is never published, and a round's status moves
only along ``TRANSITIONS``."""

from __future__ import annotations

import io

import numpy as np
import pytest

from fedlearn.aggregate.changes import user_changes
from fedlearn.aggregate.checks import (
    USERS_KEPT,
    CandidateRefused,
    Rejections,
    check_candidate,
    is_finite,
)
from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.mapper import map_shard
from fedlearn.aggregate.round import TERMINAL, TRANSITIONS, RoundStatus, move
from fedlearn.aggregate.run import (
    begin_round,
    create_round,
    reduce_round,
    rounds_of,
    run_round_inline,
)
from fedlearn.aggregate.synthetic import publish, write_deltas
from fedlearn.cli.aggregate import describe
from fedlearn.model import Base, Delta
from fedlearn.model.block import RowTable
from fedlearn.store import Store

K = 2
CONFIG = AggregationConfig(
    strategy="fedavg", clip_norm=5.0, min_users=1, min_row_users=1, buckets=2,
    max_delta_rows=50, max_user_norm=100.0,
)  # fmt: skip


def delta(value: float, *, rows: int = 1, events: int = 3) -> Delta:
    d = Delta(K)
    idx = d.rows_of([f"item={i}" for i in range(rows)])
    d._w[idx] = value
    d._v[idx, 0] = value / 2
    d.n_events = events
    return d


def publish_base(store: Store) -> Base:
    return publish(store, Base.fresh([f"item={i}" for i in range(4)], K, version="1"))


def test_clipping_never_passes_nan_or_inf_on() -> None:
    """``NaN > clip`` is false and ``inf * (clip / inf)`` is NaN: such users are rejected."""
    users = [delta(0.5), delta(np.nan), delta(np.inf), delta(1e6), delta(-2.0)]
    table = RowTable()
    changes = user_changes(
        [(d, None, 1) for d in users], K, table, clip_norm=1.0, max_weight=10, max_norm=100.0
    )
    assert changes.rejected == {1: "non_finite", 2: "non_finite", 3: "norm"}
    assert changes.index.tolist() == [0, 4]
    assert np.isfinite(changes.w).all() and np.isfinite(changes.v).all()
    per_user = np.bincount(changes.user, weights=changes.w**2 + (changes.v**2).sum(axis=1))
    assert np.sqrt(per_user).max() <= 1.0 + 1e-9  # the kept ones are clipped as before


def test_rejections_count_every_user_and_name_a_bounded_few() -> None:
    seen = Rejections()
    for i in range(USERS_KEPT + 5):
        seen.add("norm", f"u{i}")
    total = Rejections()
    total.merge(seen.to_json())
    total.merge({"counts": {"unreadable": 1}, "users": {"unreadable": ["x"]}})
    assert total.counts == {"norm": USERS_KEPT + 5, "unreadable": 1}
    assert len(total.users["norm"]) == USERS_KEPT and total.total == USERS_KEPT + 6
    with pytest.raises(ValueError, match="'bogus'"):
        seen.add("bogus", "u")


def test_a_poisoned_round_rejects_each_bad_user_with_its_reason(store: Store) -> None:
    publish_base(store)
    honest = {f"h{i}": delta(0.1 * (i + 1)) for i in range(4)}
    poison = {"nan": delta(np.nan), "huge": delta(1e5), "wide": delta(0.1, rows=60)}
    write_deltas(store, {**honest, **poison, "garbled": delta(0.1)}, base="1")
    shard = store.shard_of("garbled")
    store.client.hset(f"fl:{{s{shard}}}:delta:garbled", "delta", b"FLDL\x01\x00garbage")
    record = run_round_inline(store, CONFIG)
    assert record["status"] == "done", record.get("error")
    result = record["result"]
    assert result["users"] == len(honest)
    assert "; rejected: 1 " in describe(record)  # what `fedlearn aggregate` prints
    named = result["rejected"]["users"]
    assert sum(result["rejected"]["counts"].values()) == 4
    assert named["norm"] == ["huge"] and named["oversized"] == ["wide"]
    assert "garbled" in named["unreadable"]
    # a delta format that refuses to decode NaN reports it unreadable: rejected either way
    assert "nan" in named.get("non_finite", []) + named["unreadable"]
    new = Base.from_bytes(store.bases.get_base(result["version"]))
    assert is_finite(new) and np.abs(new.w).max() < 1.0
    # a rejected user did not contribute: its snapshot stays, so it is judged again next time
    rounds = rounds_of(store)
    for user in poison:
        assert rounds.snapshots(store.shard_of(user), [user]) == {}


def test_an_oversized_record_is_rejected_before_it_is_decoded(store: Store) -> None:
    publish_base(store)
    write_deltas(store, {"a": delta(0.1), "b": delta(0.2, rows=3)}, base="1")
    record = run_round_inline(store, CONFIG.with_(max_delta_bytes=80))
    assert record["result"]["rejected"]["users"] == {"oversized": ["b"]}


def _poison_partial(store: Store, round_id: str) -> None:
    """Overwrite every bucket of every shard's partial result with NaN sums, as a corrupted
    store or a bug in a strategy would leave them."""
    rounds = rounds_of(store)
    for shard in store.shards:
        for b in range(CONFIG.buckets):
            blob = rounds.partial_field(shard, round_id, f"b{b}")
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            arrays["w"] = np.full_like(arrays["w"], np.nan)
            out = io.BytesIO()
            np.savez(out, **arrays)
            store.client.hset(rounds.partial_key(shard, round_id), f"b{b}", out.getvalue())


def test_a_non_finite_candidate_is_never_published(store: Store) -> None:
    publish_base(store)
    write_deltas(store, {"a": delta(0.1), "b": delta(0.3)}, base="1")
    rounds = rounds_of(store)
    round_id = create_round(rounds, CONFIG)
    assert begin_round(store, rounds, round_id)
    for shard in store.shards:
        map_shard(store, rounds, round_id, shard)
    _poison_partial(store, round_id)
    summary = reduce_round(store, rounds, round_id)
    record = rounds.get(round_id)
    assert record is not None and record["status"] == "failed" == summary["status"]
    assert "non-finite" in record["error"] and "base 1 stays current" in record["error"]
    assert store.bases.current_version() == "1"
    assert [info.version for info in store.bases.history()] == ["1"]
    assert rounds.lock_holder() is None
    assert run_round_inline(store, CONFIG)["status"] == "done"  # the next round is not held up


def test_the_candidate_check_names_what_is_wrong() -> None:
    base = Base.fresh([f"item={i}" for i in range(3)], K, version="7")
    assert check_candidate(base, max_row_norm=10, max_features=3)["features"] == 3
    with pytest.raises(CandidateRefused, match="3 features > max_base_features=2"):
        check_candidate(base, max_row_norm=10, max_features=2)
    w = base.w.copy()
    w[1] = 50.0
    big = Base(base.features, 0.0, w, base.v, version="7")
    with pytest.raises(CandidateRefused, match="row 'item=1' has norm 50"):
        check_candidate(big, max_row_norm=10, max_features=3)
    nan = Base(base.features, float("nan"), base.w, base.v, version="7")
    with pytest.raises(CandidateRefused, match="non-finite"):
        check_candidate(nan, max_row_norm=10, max_features=3)


def test_a_rounds_status_moves_only_along_the_transitions(store: Store) -> None:
    rounds = rounds_of(store)
    round_id = create_round(rounds, CONFIG)
    with pytest.raises(ValueError, match="cannot move from"):
        move(rounds, round_id, "done", allowed=["queued"])
    assert move(rounds, round_id, "published") == (False, "queued")
    assert move(rounds, round_id, "abandoned") == (True, "queued")
    assert move(rounds, round_id, "running") == (False, "abandoned")
    assert {s for s in RoundStatus if s not in TRANSITIONS} == TERMINAL
    assert round_id not in rounds.open_rounds()
