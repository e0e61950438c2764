"""The rebase after a round, pure: every strategy's shares add up to its step, a user alone on
a row gets its change back out of the delta, and rows left at zero are dropped."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedlearn.aggregate.changes import user_changes
from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.fold import fold_and_rebase, fold_pairs_round, fold_rows
from fedlearn.aggregate.partials import PartialBuilder
from fedlearn.aggregate.rebase import ShareTable, rebase
from fedlearn.aggregate.strategies import STRATEGIES
from fedlearn.model import Base, Delta
from fedlearn.model.delta import PRUNE_BELOW, REBASE_TOLERANCE

K = 3
ITEMS = [f"item={i}" for i in range(6)]
ALONE = "item=alone"
CONFIGS = {
    "plain": AggregationConfig(clip_norm=None, min_users=1, min_row_users=1),
    "clipped, weighted": AggregationConfig(
        clip_norm=0.5, max_weight=4, min_users=1, min_row_users=1
    ),
    "noise": AggregationConfig(clip_norm=1.0, noise_multiplier=0.3, min_users=1, min_row_users=1),
    "min_row_users 3": AggregationConfig(clip_norm=None, min_users=1, min_row_users=3),
}


def _base() -> Base:
    rng = np.random.default_rng(0)
    return Base(ITEMS, 0.1, rng.normal(0, 0.1, 6), rng.normal(0, 0.1, (6, K)), version="1")


def _users(n: int, seed: int = 1) -> list[Delta]:
    """``n`` users on shared items; user 0 alone changes ``ALONE``."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n):
        names = [str(n) for n in rng.choice(ITEMS, size=3, replace=False)]
        names += [ALONE] if u == 0 else []
        w, v = rng.normal(0, 0.3, len(names)), rng.normal(0, 0.2, (len(names), K))
        out.append(Delta.from_rows(K, names, w, v, float(rng.normal(0, 0.2))))
    return out


def _configs() -> list[tuple[str, AggregationConfig]]:
    return [
        (f"{strategy}/{label}", replace(config, strategy=strategy))
        for strategy in STRATEGIES
        for label, config in CONFIGS.items()
        if not (config.noise_multiplier and not STRATEGIES[strategy].supports_noise)
    ]


@pytest.mark.parametrize(("label", "config"), _configs(), ids=[c[0] for c in _configs()])
def test_the_shares_of_a_row_add_up_to_its_step_without_the_noise(
    label: str, config: AggregationConfig
) -> None:
    base, users = _base(), _users(7)
    events = [3, 1, 8, 2, 5, 4, 6]
    quiet = replace(config, noise_multiplier=0.0)
    done = fold_pairs_round(
        base, [(d, None, e) for d, e in zip(users, events, strict=True)], quiet, version="2"
    )
    assert done.base is not None
    names = [*ITEMS, ALONE]
    step_w, step_v = done.base.rows(names)
    old_w, old_v = base.rows(names)
    shares_w = sum(s.lookup(names)[0] for s in done.shares.values())
    shares_v = sum(s.lookup(names)[1] for s in done.shares.values())
    np.testing.assert_allclose(shares_w, step_w - old_w, atol=1e-6)
    np.testing.assert_allclose(shares_v, step_v - old_v, atol=1e-6)
    assert sum(s.w0 for s in done.shares.values()) == pytest.approx(
        done.base.w0 - base.w0, abs=1e-6
    )


QUIET = [c for c in _configs() if not c[1].noise_multiplier]  # noise is nobody's share


@pytest.mark.parametrize(("label", "config"), QUIET, ids=[c[0] for c in QUIET])
def test_a_user_alone_on_a_row_does_not_get_its_change_twice(
    label: str, config: AggregationConfig
) -> None:
    base, users = _base(), _users(7)
    deltas = {f"u{i}": d for i, d in enumerate(users)}
    before = {u: d.copy() for u, d in deltas.items()}
    new, _, _ = fold_and_rebase(
        base, deltas, dict.fromkeys(deltas, 3), {}, config, version="2",
        rng=np.random.default_rng(5),
    )  # fmt: skip
    assert new is not None
    clone_before = base.rows([ALONE])[0] + before["u0"].lookup([ALONE])[0]
    clone_after = new.rows([ALONE])[0] + deltas["u0"].lookup([ALONE])[0]
    np.testing.assert_allclose(clone_after, clone_before, atol=1e-6)
    if config.min_row_users == 1 and config.clip_norm is None:  # folded whole: row dropped
        assert ALONE in new.index and ALONE not in deltas["u0"].index
    elif config.min_row_users == 1:  # the clipped part went into the base, the rest stays
        assert ALONE in new.index and ALONE in deltas["u0"].index
    else:  # withheld as private: nothing was folded, the user keeps it
        assert ALONE not in new.index
        np.testing.assert_array_equal(
            deltas["u0"].lookup([ALONE])[0], before["u0"].lookup([ALONE])[0]
        )


def test_fedavgm_takes_out_its_server_rate_times_the_users_part() -> None:
    config = AggregationConfig(
        strategy="fedavgm", server_lr=0.5, clip_norm=None, min_users=1, min_row_users=1
    )
    base, (a,) = _base(), _users(1)
    done = fold_pairs_round(base, [(a, None, 2)], config, version="2")
    assert done.base is not None
    np.testing.assert_allclose(done.shares[0].w, 0.5 * a.w, atol=1e-7)
    rebased = rebase(a, done.shares[0])
    np.testing.assert_allclose(rebased.w, 0.5 * a.w, atol=1e-6)  # half is now the base's


def test_rows_within_the_tolerance_of_zero_are_dropped_the_others_kept() -> None:
    delta = Delta.from_rows(K, ["a", "b", "c"], [1.0, 2.0, 0.5], np.ones((3, K)))
    share = Delta.from_rows(
        K, ["a", "b"], [1 + REBASE_TOLERANCE / 2, 1], [[1, 1, 1 - REBASE_TOLERANCE / 2], [1, 1, 1]]
    )  # fmt: skip
    out = rebase(delta, share)
    assert out.names == ["b", "c"]  # "a" is zero within the tolerance; order kept
    np.testing.assert_allclose(out.lookup(["b"])[0], [1.0])
    np.testing.assert_allclose(out.lookup(["b"])[1], [[0, 0, 0]])  # not dropped: w is 1
    assert len(delta) == 3  # the input is left alone


def test_a_rebase_drops_every_row_left_below_the_prune_size_and_keeps_the_rest() -> None:
    small, large = PRUNE_BELOW / 2, PRUNE_BELOW * 2
    delta = Delta.from_rows(
        K, ["kept", "tiny", "late-v", "shared"], [1.0, small, small, 2.0],
        [[0, 0, 0], [small, -small, 0], [0, 0, -large], [1, 1, 1]],
    )  # fmt: skip
    share = Delta.from_rows(K, ["shared"], [2.0 - small], [[1, 1, 1 - small]])
    out = rebase(delta, share)
    assert out.names == ["kept", "late-v"]  # "tiny" was never shared: dropped all the same
    unpruned = rebase(delta, share, prune_below=0)
    assert unpruned.names == ["kept", "tiny", "late-v", "shared"]
    np.testing.assert_allclose(out.lookup(["late-v"])[1], [[0, 0, -large]])


def test_a_rebase_keeps_the_delta_in_its_box() -> None:
    delta = Delta.from_rows(K, ["a"], [15.0], np.full((1, K), -15.0))
    share = Delta.from_rows(K, ["a"], [-1e6], np.full((1, K), 1e6), w0=-1e9)
    out = rebase(delta, share)
    assert out.is_finite() and np.abs(out.w).max() <= 16 and np.abs(out.v).max() <= 16
    assert abs(out.w0) <= 16


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_share_table_survives_its_bytes(strategy: str) -> None:
    make = STRATEGIES[strategy]()
    builder = PartialBuilder(K, needs_values=make.needs_values)
    pairs = [(d, None, 2) for d in _users(5)]
    builder.add(user_changes(pairs, K, builder.table, clip_norm=None, max_weight=100))
    rows = builder.rows(max_weight=100.0, clip_norm=None)
    table = fold_rows(
        [rows], K, make, min_row_users=1, state=None, rng=np.random.default_rng()
    ).shares
    again = ShareTable.from_bytes(table.to_bytes())
    assert again.names == table.names and again.gain == table.gain
    for name in ShareTable._ARRAYS:
        mine, theirs = getattr(table, name), getattr(again, name)
        assert (mine is None and theirs is None) or np.array_equal(mine, theirs)
