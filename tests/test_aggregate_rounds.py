"""The pure math of a round: users' changes, shards' partials, merging, applying, versions."""

from __future__ import annotations

import numpy as np
import pytest

from fedlearn.aggregate.changes import apply_update, next_version, norm_summary, user_changes
from fedlearn.aggregate.partials import (
    PartialBuilder,
    merge_bucket,
    norms_of,
    update_from_bytes,
    update_to_bytes,
)
from fedlearn.aggregate.snapshots import Snapshot
from fedlearn.aggregate.strategies import INTERCEPT, FedAvg, RowUpdate
from fedlearn.model import Base, Delta
from fedlearn.model.block import RowTable
from fedlearn.store import StreamId

K = 3


def delta(rows: dict[str, tuple[float, list[float]]], w0: float = 0.0, events: int = 0) -> Delta:
    d = Delta(K, dtype=np.float64)
    for name, (w, v) in rows.items():
        (r,) = d.rows_of([name])
        d._w[r], d._v[r] = w, v
    d.w0, d.n_events = w0, events
    return d


def by_row(changes, table: RowTable, user: int) -> dict[str, tuple[float, list[float]]]:  # type: ignore[no-untyped-def]
    mine = changes.user == user
    return {
        table.names[r]: (w, v.tolist())
        for r, w, v in zip(changes.row[mine], changes.w[mine], changes.v[mine], strict=True)
    }


def test_a_users_change_is_its_delta_minus_its_snapshot_on_touched_rows_only() -> None:
    old = delta({"a": (1.0, [1, 1, 1]), "b": (2.0, [0, 0, 0])}, w0=0.5)
    new = delta({"a": (1.5, [1, 1, 1]), "b": (2.0, [0, 0, 0]), "c": (0.0, [0, 1, 0])}, w0=0.25)
    table = RowTable()
    changes = user_changes([(new, old, 7)], K, table, clip_norm=None, max_weight=100)
    got = by_row(changes, table, 0)
    assert got == {
        "a": (0.5, [0.0, 0.0, 0.0]),
        "c": (0.0, [0.0, 1.0, 0.0]),  # a new row counts from zero
        INTERCEPT: (-0.25, [0.0, 0.0, 0.0]),
    }  # "b" did not move: not touched
    assert changes.norm == pytest.approx([np.sqrt(0.25 + 1 + 0.0625)])
    assert changes.weight.tolist() == [7.0]


def test_changes_are_clipped_weights_capped_and_idle_users_left_out() -> None:
    big = delta({"a": (3.0, [0, 4, 0])})  # norm 5 from nothing
    same = delta({"a": (1.0, [0, 0, 0])})
    table = RowTable()
    changes = user_changes(
        [(same, same.copy(), 3), (big, None, 500)], K, table, clip_norm=1.0, max_weight=100
    )
    assert changes.index.tolist() == [1]  # the first user changed nothing
    assert changes.norm == pytest.approx([5.0])
    assert by_row(changes, table, 0)["a"] == (pytest.approx(0.6), pytest.approx([0, 0.8, 0]))
    assert changes.weight.tolist() == [100.0]


@pytest.mark.parametrize("needs_values", [False, True])
def test_partials_of_two_shards_merge_to_the_direct_computation(needs_values: bool) -> None:
    rng = np.random.default_rng(3)
    users = []
    for _ in range(40):
        names = [f"item={i}" for i in rng.choice(12, size=4, replace=False)]
        rows = {n: (float(rng.normal()), rng.normal(size=K).tolist()) for n in names}
        users.append((delta(rows, w0=float(rng.normal())), None, int(rng.integers(1, 9))))
    shards = [users[:25], users[25:]]
    blobs = []
    for part in shards:
        builder = PartialBuilder(K, needs_values=needs_values)
        for start in range(0, len(part), 10):  # several chunks, as the mapper reads them
            builder.add(
                user_changes(part[start : start + 10], K, builder.table, clip_norm=2.0,
                             max_weight=5)
            )  # fmt: skip
        assert builder.users == len(part)
        blobs.append(builder.blobs(3))
    merged = [
        merge_bucket(
            [b[f"b{i}"] for b in blobs], K, needs_values=needs_values, max_weight=5.0,
            clip_norm=2.0,
        )
        for i in range(3)
    ]  # fmt: skip
    got = RowUpdate.concat(
        [FedAvg().aggregate(m.sums() if needs_values else m, None) for m in merged],  # type: ignore[arg-type]
        K,
    )
    table = RowTable()
    direct = user_changes(users, K, table, clip_norm=2.0, max_weight=5)
    weight = direct.weight[direct.user]
    for name in table.names:
        on = direct.row == table.index[name]
        i = got.names.index(name)
        expected_w = (weight[on] * direct.w[on]).sum() / weight[on].sum()
        expected_v = (weight[on, None] * direct.v[on]).sum(axis=0) / weight[on].sum()
        assert got.w[i] == pytest.approx(expected_w, abs=1e-5)
        assert got.v[i] == pytest.approx(expected_v, abs=1e-5)
        assert got.count[i] == on.sum()
    assert sorted(got.names) == sorted(table.names)
    norms = np.concatenate([norms_of(b["norms"]) for b in blobs])
    assert norm_summary(norms, 2.0)["clipped_users"] == int((direct.norm > 2.0).sum())


def test_apply_update_adds_known_rows_and_appends_new_ones() -> None:
    base = Base.fresh(["item=1", "item=2"], K, init_seed=5, version="4")
    update = RowUpdate(
        ["item=2", "item=9", INTERCEPT],
        np.array([0.5, 1.0, -0.2]),
        np.array([[0.1, 0.1, 0.1], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
    )
    new = apply_update(base, update, version="5", meta={"parent": "4"})
    assert new.features == ["item=1", "item=2", "item=9"]
    assert new.w0 == pytest.approx(-0.2)
    assert new.w == pytest.approx([0.0, 0.5, 1.0])
    assert new.v[1] == pytest.approx(base.v[1] + 0.1)
    start = Base.fresh(["item=9"], K, init_seed=5).v[0]  # what a clone saw for the new item
    assert new.v[2] == pytest.approx(start + np.array([0, 0, 1.0]), abs=1e-6)
    assert new.version == "5" and new.meta == {"parent": "4"}
    assert base.features == ["item=1", "item=2"]  # the old version is untouched


def test_updates_round_trip_through_bytes() -> None:
    update = RowUpdate(["a", INTERCEPT], np.array([1.0, 2.0]), np.ones((2, K)))
    back = update_from_bytes(update_to_bytes(update), K)
    assert back.names == ["a", INTERCEPT] and back.w.tolist() == [1.0, 2.0]


def test_next_version_skips_every_id_taken() -> None:
    assert next_version([]) == "1"
    assert next_version(["1", "2", "demo", "7"]) == "8"


def test_snapshot_bytes_keep_the_delta_exactly() -> None:
    blob = delta({"a": (1.0, [1, 2, 3])}).to_bytes() + b"|tail"
    snap = Snapshot(2, StreamId(1700000000000, 3), 41, blob)
    back = Snapshot.from_bytes(snap.to_bytes())
    assert back == snap and back.position == (2, StreamId(1700000000000, 3))
    with pytest.raises(ValueError, match="snapshot"):
        Snapshot.from_bytes(b"FLDL....")
