"""The trainer's table of deltas learns what ``learn_many_shadow`` learns over ``Delta``s:
the same predictions, and the same ``.fldl`` bytes for every user after every batch (rows,
recency order, row cap, intercepts, event counts), across batches, evictions and reloads."""

from __future__ import annotations

import numpy as np
import pytest

from fedlearn.model import Base, Delta
from fedlearn.model.batch import learn_many_shadow
from fedlearn.model.delta import decode_rows
from fedlearn.model.table import DeltaTable

K = 4
BASE = Base.fresh([f"item=i{i}" for i in range(20)] + [f"genre=g{g}" for g in range(4)], K)


def _stream(rng: np.random.Generator, n: int, n_users: int) -> list[tuple[str, dict, int]]:
    events = []
    for _ in range(n):
        user = f"u{int(rng.integers(n_users))}"
        item = int(rng.integers(30))  # items 20..29 are not in the base
        x = {f"user={user}": 1.0, f"item=i{item}": 1.0, f"genre=g{item % 5}": 1.0}
        if rng.random() < 0.5:
            x[f"q=s{int(rng.integers(50))}"] = float(rng.random())
        events.append((user, x, int(rng.random() < 0.4)))
    return events


@pytest.mark.parametrize("max_rows", [None, 6])
@pytest.mark.parametrize("shared_lr_scale", [1.0, 0.3])
def test_the_table_learns_what_learn_many_shadow_learns(max_rows, shared_lr_scale) -> None:
    rng = np.random.default_rng(7)
    deltas: dict[str, Delta] = {}
    table = DeltaTable(K, capacity=4)  # small: the table grows while learning
    settings = (0.2, 0.01, 0.1, max_rows)
    for _ in range(6):
        events = _stream(rng, 150, 12)
        p, base_p = learn_many_shadow(
            BASE, deltas, events, *settings, shared_lr_scale=shared_lr_scale
        )
        tp, tbase_p, reset = table.learn(BASE, events, *settings, shared_lr_scale=shared_lr_scale)
        assert reset == []
        np.testing.assert_allclose(tp, p, rtol=0, atol=1e-12)
        np.testing.assert_allclose(tbase_p, base_p, rtol=0, atol=1e-12)
        got = table.to_bytes_many(sorted(deltas))
        assert got == {user: delta.to_bytes() for user, delta in sorted(deltas.items())}
    assert table.n_rows == sum(len(d) for d in deltas.values())


def test_users_put_dropped_and_reset_keep_the_table_exact_and_bounded() -> None:
    rng = np.random.default_rng(3)
    deltas: dict[str, Delta] = {}
    learn_many_shadow(BASE, deltas, _stream(rng, 200, 8), 0.2, 0.0, 0.1, None)
    table = DeltaTable(K, capacity=2)
    for i, (user, delta) in enumerate(deltas.items()):
        if i % 2:  # as the trainer loads users from Redis
            table.put_rows(user, decode_rows(delta.to_bytes()))
        else:
            table.put(user, Delta.from_bytes(delta.to_bytes()))
    for user, delta in deltas.items():
        assert table.delta(user).to_bytes() == delta.to_bytes()
    rows = table.n_rows
    table.drop("u0")
    table.reset("u1")
    assert table.n_rows == rows - len(deltas["u0"]) - len(deltas["u1"])
    assert "u0" not in table and table.delta("u1").to_bytes() == Delta(K).to_bytes()
    # Freed rows are reused zeroed: learning on goes on exactly as on the Delta objects.
    del deltas["u0"]
    deltas["u1"] = Delta(K)
    events = _stream(rng, 200, 8)
    p, _ = learn_many_shadow(BASE, deltas, events, 0.2, 0.0, 0.1, None)
    tp, _, _ = table.learn(BASE, events, 0.2, 0.0, 0.1, None)
    np.testing.assert_allclose(tp, p, rtol=0, atol=1e-12)
    assert table.to_bytes_many(list(deltas)) == {u: d.to_bytes() for u, d in deltas.items()}


def test_a_new_base_version_is_read_again_for_every_row() -> None:
    table = DeltaTable(K)
    events = [("a", {"user=a": 1.0, "item=i1": 1.0}, 1)]
    table.learn(BASE, events, 0.1, 0.0, 0.1, None)
    moved = Base(BASE.features, 0.5, BASE.w + 1.0, BASE.v, version="v2")
    _, base_p, _ = table.learn(moved, events, 0.1, 0.0, 0.1, None)
    from fedlearn.model import Clone

    assert base_p[0] == pytest.approx(Clone(moved).predict_proba_one(events[0][1]), abs=1e-12)


def test_a_non_finite_clone_restarts_from_the_base_alone() -> None:
    table = DeltaTable(K)
    events = [("a", {"user=a": 1.0, "item=i1": float("nan")}, 1), ("b", {"item=i2": 1.0}, 0)]
    _, _, reset = table.learn(BASE, events, 0.1, 0.0, 0.1, None)
    assert reset == ["a"]
    assert len(table.delta("a")) == 0 and table.delta("a").w0 == 0.0
    assert table.delta("b").is_finite() and len(table.delta("b")) == 1


def test_a_stored_delta_without_rows_keeps_its_intercept_and_count() -> None:
    """A clone whose every row a rebase pruned is still more than the base: its intercept
    and its events count come back from Redis with it."""
    delta = Delta(K)
    delta.w0, delta.n_events = 0.75, 12
    table = DeltaTable(K)
    table.put_rows("u", decode_rows(delta.to_bytes()))
    assert table.delta("u").to_bytes() == delta.to_bytes() and table.events_of("u") == 12


def test_recency_is_the_order_of_last_use_and_the_cap_drops_the_oldest() -> None:
    """A row used twice in a batch counts from its last use, loaded rows keep their stored
    order behind the batch's, and the cap drops the least recently used: as ``Delta``'s."""
    loaded = Delta(K)
    loaded.rows_of(["x", "y", "z"])
    deltas = {"u": Delta.from_bytes(loaded.to_bytes())}
    table = DeltaTable(K, capacity=2)
    table.put_rows("u", decode_rows(loaded.to_bytes()))
    events = [
        ("u", {"a": 1.0, "y": 1.0}, 1),
        ("u", {"c": 1.0}, 0),
        ("v", {"a": 1.0}, 1),
        ("u", {"a": 1.0, "b": 0.5}, 0),
    ]
    for max_rows in (None, 4):
        learn_many_shadow(BASE, deltas, events, 0.2, 0.0, 0.1, max_rows)
        table.learn(BASE, events, 0.2, 0.0, 0.1, max_rows)
        assert table.to_bytes_many(["u", "v"]) == {u: d.to_bytes() for u, d in deltas.items()}
    assert table.delta("u").names == deltas["u"].names == ["y", "c", "a", "b"]
