"""AUC, gAUC and log loss against hand-computed cases and a brute-force pairwise reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedlearn.model.metrics import StreamingMetrics, group_auc, log_loss, roc_auc


def pairwise_auc(y: np.ndarray, p: np.ndarray) -> float:
    """The definition, O(n^2): share of (click, skip) pairs ordered right, ties count 1/2."""
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def pairwise_gauc(users: np.ndarray, y: np.ndarray, p: np.ndarray) -> float:
    total = weight = 0.0
    for user in set(users.tolist()):
        mine = users == user
        auc = pairwise_auc(y[mine], p[mine])
        if not math.isnan(auc):
            total += auc * mine.sum()
            weight += mine.sum()
    return total / weight if weight else math.nan


@pytest.mark.parametrize(
    ("y", "p", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # 3 of 4 pairs right
        ([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9], 0.875),  # one tied pair counts 1/2
        ([0, 1], [0.5, 0.5], 0.5),
        ([1, 1, 0], [0.9, 0.8, 0.1], 1.0),
        ([1, 1, 0], [0.1, 0.2, 0.9], 0.0),
        ([True, False, True], [3.0, -1.0, -2.0], 0.5),  # any real scores, bool labels
    ],
)
def test_auc_by_hand(y: list, p: list, expected: float) -> None:
    assert roc_auc(y, p) == pytest.approx(expected)


@pytest.mark.parametrize("y", [[1, 1, 1], [0, 0], []])
def test_auc_is_nan_without_both_classes(y: list) -> None:
    assert math.isnan(roc_auc(y, [0.5] * len(y)))


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_the_pairwise_definition_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
    p = np.round(rng.random(n), 1)  # few distinct values: many ties
    expected = pairwise_auc(y, p)
    if math.isnan(expected):
        assert math.isnan(roc_auc(y, p))
    else:
        assert roc_auc(y, p) == pytest.approx(expected, abs=1e-12)


def test_auc_depends_only_on_the_order_of_scores() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    p = rng.random(500)
    assert roc_auc(y, p) == pytest.approx(roc_auc(y, np.log(p / (1 - p))))
    assert roc_auc(y, p) == pytest.approx(1 - roc_auc(y, -p))


def test_gauc_by_hand_weights_users_by_events_and_drops_one_class_users() -> None:
    users = ["a", "a", "a", "a", "b", "b", "c", "c", "c"]
    y = [0, 0, 1, 1, 1, 0, 1, 1, 1]
    p = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.5, 0.6, 0.7]
    # a: 0.75 over 4 events, b: 0.0 over 2 events, c: only clicks, left out.
    assert group_auc(users, y, p) == pytest.approx((0.75 * 4 + 0.0 * 2) / 6)


def test_gauc_differs_from_auc_when_users_differ_in_base_rate() -> None:
    # Each user is ranked perfectly, but a's scores all sit above b's: global AUC suffers.
    users = ["a"] * 4 + ["b"] * 4
    y = [0, 0, 1, 1, 0, 1, 1, 1]
    p = [0.7, 0.75, 0.8, 0.9, 0.1, 0.2, 0.3, 0.4]
    assert group_auc(users, y, p) == pytest.approx(1.0)
    assert roc_auc(y, p) < 0.8


def test_gauc_is_nan_when_no_user_has_both_classes() -> None:
    assert math.isnan(group_auc(["a", "b"], [1, 0], [0.2, 0.3]))
    assert math.isnan(group_auc([], [], []))


@pytest.mark.parametrize("seed", range(4))
def test_gauc_matches_the_pairwise_definition_with_ties(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 400
    users = rng.integers(0, 25, n)
    y = rng.integers(0, 2, n)
    p = np.round(rng.random(n), 1)
    assert group_auc(users, y, p) == pytest.approx(pairwise_gauc(users, y, p), abs=1e-12)


def test_log_loss_by_hand_and_clipped() -> None:
    assert log_loss([1, 0], [0.8, 0.3]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-15))
    assert log_loss([0], [1.0], eps=1e-6) == pytest.approx(-math.log(1e-6))
    assert math.isnan(log_loss([], []))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: roc_auc([0, 2], [0.1, 0.2]), "labels must be 0 or 1, got 2"),
        (lambda: roc_auc([0, 1], [0.1]), r"scores must have the labels' shape \(2,\)"),
        (lambda: roc_auc([0, 1], [0.1, math.nan]), "scores must be finite, got nan"),
        (lambda: log_loss([0, 1], [0.1, 1.5]), r"probabilities must be in \[0, 1\], got 1.5"),
        (lambda: group_auc(["a"], [0, 1], [0.1, 0.2]), "users must have the labels' shape"),
    ],
)
def test_bad_input_names_the_value(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_streaming_counts_positions_per_user_and_splits_first_from_later() -> None:
    rng = np.random.default_rng(7)
    users = rng.integers(0, 30, 2000).astype(str)
    y = rng.integers(0, 2, 2000)
    p = np.clip(0.3 * y + 0.7 * rng.random(2000), 0, 1)
    metrics = StreamingMetrics(first_n=5)
    for u, label, prob in zip(users[:1000], y[:1000], p[:1000], strict=True):
        metrics.add(u, int(label), float(prob))
    metrics.add_many(users[1000:], y[1000:], p[1000:])
    # What the helper should have computed, done the slow way.
    position = np.zeros(2000, dtype=int)
    seen: dict[str, int] = {}
    for i, u in enumerate(users):
        position[i] = seen.get(u, 0)
        seen[u] = position[i] + 1
    first = position < 5
    report = metrics.report()
    assert (report.n, report.n_users, report.n_first) == (2000, 30, int(first.sum()))
    assert report.n_first == 30 * 5
    assert report.auc == pytest.approx(roc_auc(y, p))
    assert report.gauc == pytest.approx(group_auc(users, y, p))
    assert report.log_loss == pytest.approx(log_loss(y, p))
    assert report.auc_first == pytest.approx(roc_auc(y[first], p[first]))
    assert report.auc_later == pytest.approx(roc_auc(y[~first], p[~first]))
    assert report.log_loss_later == pytest.approx(log_loss(y[~first], p[~first]))


def test_streaming_takes_explicit_positions_and_reports_json_safe() -> None:
    metrics = StreamingMetrics(first_n=1)
    metrics.add("a", 1, 0.9, position=0)
    metrics.add("a", 0, 0.2, position=7)
    report = metrics.report().to_dict()
    assert (report["n_first"], report["n_later"]) == (1, 1)
    assert report["auc_first"] is None  # one class only: nan becomes None
    assert report["auc"] == 1.0
    with pytest.raises(ValueError, match=r"probability must be in \[0, 1\], got 1.2"):
        metrics.add("a", 1, 1.2)


def test_streaming_report_of_nothing_is_all_nan() -> None:
    report = StreamingMetrics().report()
    assert report.n == 0
    assert math.isnan(report.auc) and math.isnan(report.gauc) and math.isnan(report.log_loss)
