"""Aggregation rules on hand-made contributions, and one suite every rule goes through."""

from __future__ import annotations

import numpy as np
import pytest

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.strategies import (
    STRATEGIES,
    FedAvg,
    FedAvgM,
    Median,
    RowUpdate,
    RowValues,
    Strategy,
    TrimmedMean,
    make_strategy,
)

K = 2


def values(entries: list[tuple[str, float, float]], names: list[str] | None = None) -> RowValues:
    """``(row name, value, user weight)`` entries; v is the value in every factor too."""
    names = names or list(dict.fromkeys(e[0] for e in entries))
    row = np.array([names.index(e[0]) for e in entries], dtype=np.int64)
    w = np.array([e[1] for e in entries], dtype=np.float64)
    v = np.repeat(w[:, None], K, axis=1) * 0.5
    weight = np.array([e[2] for e in entries], dtype=np.float64)
    return RowValues(names, row, w, v, weight, max_weight=10.0, clip_norm=1.0)


def run(strategy: Strategy, rows: RowValues, seed: int = 0) -> RowUpdate:
    given = rows if strategy.needs_values else rows.sums()
    return strategy.aggregate(given, np.random.default_rng(seed))


def test_fedavg_is_weighted_over_the_users_who_touched_the_row() -> None:
    # user A (weight 1) moved item=1 by 1; user B (weight 3) moved item=1 by 3 and item=2 by 10
    rows = values([("item=1", 1.0, 1.0), ("item=1", 3.0, 3.0), ("item=2", 10.0, 3.0)])
    update = run(FedAvg(), rows)
    got = dict(zip(update.names, update.w, strict=True))
    assert got["item=1"] == pytest.approx((1 * 1 + 3 * 3) / 4)
    assert got["item=2"] == pytest.approx(10.0)  # not diluted by A, who never touched it
    assert update.v[update.names.index("item=2")] == pytest.approx([5.0, 5.0])
    assert update.count.tolist() == [2, 1]


@pytest.mark.parametrize("strategy", [TrimmedMean(beta=0.2), Median()])
def test_robust_rules_ignore_a_few_huge_values(strategy: Strategy) -> None:
    honest = [("item=1", 1.0 + 0.01 * i, 1.0) for i in range(10)]
    attack = [("item=1", 1e6, 10.0), ("item=1", 2e6, 10.0)]
    rows = values(honest + attack + [("item=2", 2.0, 1.0)])
    update = run(strategy, rows)
    got = dict(zip(update.names, update.w, strict=True))
    assert 1.0 <= got["item=1"] <= 1.1
    assert got["item=2"] == pytest.approx(2.0)  # a row of one user is that user's value
    assert abs(dict(zip(update.names, run(FedAvg(), rows).w, strict=True))["item=1"]) > 1e4


def test_trimmed_mean_trims_floor_beta_n_per_side() -> None:
    rows = values([("r", x, 1.0) for x in (0.0, 1.0, 2.0, 3.0, 100.0)])
    assert run(TrimmedMean(beta=0.2), rows).w[0] == pytest.approx(2.0)  # drops 0 and 100
    assert run(TrimmedMean(beta=0.1), rows).w[0] == pytest.approx(106 / 5)  # n*beta < 1


def test_median_of_an_even_count_is_the_middle_pair_mean() -> None:
    rows = values([("r", x, 1.0) for x in (4.0, 1.0, 3.0, 2.0)])
    assert run(Median(), rows).w[0] == pytest.approx(2.5)


def test_noise_is_added_to_the_sums_with_the_stated_scale() -> None:
    n = 4000
    rows = values([(f"r{i}", 0.0, 1.0) for i in range(n)])  # every row: one user of weight 1
    update = run(FedAvg(noise_multiplier=2.0), rows, seed=1)
    # std on each sum = noise_multiplier * clip_norm * max_weight = 2 * 1 * 10; weight 1
    assert np.std(update.w) == pytest.approx(20.0, rel=0.05)
    assert run(FedAvg(), rows).w == pytest.approx(np.zeros(n))


def test_noise_needs_clipping() -> None:
    rows = values([("r", 1.0, 1.0)])
    rows.clip_norm = None
    with pytest.raises(ValueError, match="needs clipping"):
        run(FedAvg(noise_multiplier=1.0), rows)
    with pytest.raises(ValueError, match="needs clipping"):
        AggregationConfig(noise_multiplier=1.0, clip_norm=None)
    with pytest.raises(ValueError, match="does not add noise"):
        AggregationConfig(strategy="median", noise_multiplier=1.0)


def test_fedavgm_carries_momentum_between_rounds() -> None:
    strategy = FedAvgM(server_lr=0.5, momentum=0.9)
    first, state = strategy.step(run(strategy, values([("a", 2.0, 1.0)])), None)
    assert dict(zip(first.names, first.w, strict=True)) == {"a": pytest.approx(1.0)}
    second, state = strategy.step(run(strategy, values([("b", 4.0, 1.0)])), state)
    got = dict(zip(second.names, second.w, strict=True))
    assert got["a"] == pytest.approx(0.5 * 0.9 * 2.0)  # keeps drifting on its momentum
    assert got["b"] == pytest.approx(0.5 * 4.0)
    assert state is not None and set(state.names) == {"a", "b"}


def test_strategies_by_name_and_errors_that_name_the_value() -> None:
    assert isinstance(make_strategy("trimmed_mean", beta=0.3), TrimmedMean)
    with pytest.raises(ValueError, match="'krum'"):
        make_strategy("krum")
    with pytest.raises(ValueError, match=r"got 0\.5"):
        TrimmedMean(beta=0.5)
    with pytest.raises(ValueError, match="momentum"):
        FedAvgM(momentum=1.0)
    assert FedAvgM(server_lr=0.3).describe() == {
        "name": "fedavgm", "server_lr": 0.3, "momentum": 0.9, "noise_multiplier": 0.0,
    }  # fmt: skip


# -- one suite for every rule -----------------------------------------------------------------


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request: pytest.FixtureRequest) -> Strategy:
    return make_strategy(request.param)


def test_every_rule_agrees_when_all_users_agree(strategy: Strategy) -> None:
    rows = values([(name, 0.7, float(u + 1)) for u in range(5) for name in ("x", "y")])
    update = run(strategy, rows)
    applied, _ = strategy.step(update, None)
    assert sorted(update.names) == ["x", "y"]
    expected = 0.7 * (strategy.server_lr if isinstance(strategy, FedAvgM) else 1.0)
    assert applied.w == pytest.approx([expected, expected])
    assert applied.v == pytest.approx(np.full((2, K), expected * 0.5))


def test_every_rule_is_pure_and_deterministic(strategy: Strategy) -> None:
    rows = values([("x", 0.1 * i, 1.0 + i % 3) for i in range(9)] + [("y", -1.0, 2.0)])
    before = (rows.w.copy(), rows.v.copy(), rows.row.copy())
    first, second = run(strategy, rows), run(strategy, rows)
    assert first.names == second.names
    assert np.array_equal(first.w, second.w) and np.array_equal(first.v, second.v)
    assert np.array_equal(rows.w, before[0]) and np.array_equal(rows.v, before[1])
    assert np.array_equal(rows.row, before[2])


def test_every_rule_handles_no_contribution(strategy: Strategy) -> None:
    rows = values([], names=[])
    update = run(strategy, rows)
    assert update.names == [] and update.w.shape == (0,)
