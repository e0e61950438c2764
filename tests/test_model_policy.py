"""Exploration policies: slot probabilities are distributions, draws follow them, greedy is
the ranking served before exploration, and every logged propensity is in (0, 1]."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import orjson
import pytest

from fedlearn.model.errors import PolicyError
from fedlearn.model.policy import (
    Policy,
    explored,
    rank_with_policy,
    ranking_propensities,
    slot_probabilities,
)
from fedlearn.model.policy_vectors import POLICIES, make_policy_vectors
from tests.test_vectors import VECTORS, assert_close

POLICY_VECTORS = VECTORS.with_name("policy_vectors.json")

# Ties (0.7 twice), a clear best and a far tail: the cases where the policies differ.
SCORES = np.array([0.2, 0.7, 0.05, 0.7, 0.9, 0.4])


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_slot_probabilities_are_a_distribution_over_the_available_items(policy: Policy) -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        available = rng.random(SCORES.size) < 0.6
        if not available.any():
            continue
        p = slot_probabilities(SCORES, available, policy)
        assert np.all(p[~available] == 0.0)
        assert np.all(p >= 0.0)
        assert math.isclose(p.sum(), 1.0, rel_tol=1e-12)


def test_each_policy_puts_its_mass_where_it_says() -> None:
    everything = np.ones(SCORES.size, dtype=bool)
    greedy = slot_probabilities(SCORES, everything, Policy.greedy())
    assert greedy.tolist() == [0, 0, 0, 0, 1, 0]
    without_best = everything.copy()
    without_best[4] = False
    # Equal scores: the lower index takes the slot, as a stable sort would.
    assert slot_probabilities(SCORES, without_best, Policy.greedy())[1] == 1.0
    eps = slot_probabilities(SCORES, everything, Policy("epsilon", epsilon=0.3))
    np.testing.assert_allclose(eps, [0.05, 0.05, 0.05, 0.05, 0.75, 0.05])
    soft = slot_probabilities(SCORES, everything, Policy("softmax", temperature=0.5))
    w = np.exp(SCORES / 0.5)
    np.testing.assert_allclose(soft, w / w.sum(), rtol=1e-12)


def test_softmax_is_stable_at_extreme_scores_and_temperatures() -> None:
    scores = np.array([1e300, -1e300, 0.0])
    p = slot_probabilities(scores, np.ones(3, dtype=bool), Policy("softmax", temperature=1e-9))
    assert np.all(np.isfinite(p)) and p.tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("policy", POLICIES[1:], ids=repr)
def test_drawn_rankings_follow_their_propensities(policy: Policy) -> None:
    """The frequency of every ordered pair of the first two slots matches the product of the
    slot probabilities, within the binomial spread of the sample size."""
    n, k = 10_000, 2
    rng = np.random.default_rng(11)
    seen: Counter[tuple[int, ...]] = Counter()
    for _ in range(n):
        order, propensities = rank_with_policy(SCORES, k, policy, rng)
        assert np.all((propensities > 0.0) & (propensities <= 1.0))
        np.testing.assert_allclose(propensities, ranking_propensities(SCORES, order, policy))
        seen[tuple(order.tolist())] += 1
    for pair in itertools.permutations(range(SCORES.size), k):
        expected = n * float(np.prod(ranking_propensities(SCORES, np.array(pair), policy)))
        # 5 standard deviations of a binomial count, plus 2 for the rare pairs where a count
        # is too small for the normal approximation.
        tolerance = 5 * math.sqrt(expected * (1 - expected / n)) + 2
        assert abs(seen[pair] - expected) <= tolerance, (pair, seen[pair], expected)


@pytest.mark.parametrize("policy", [Policy.greedy(), Policy("epsilon", epsilon=0.0)], ids=repr)
def test_greedy_equals_the_stable_descending_sort(policy: Policy) -> None:
    rng = np.random.default_rng(5)
    for n in (1, 2, 7, 40):
        scores = rng.integers(0, 4, n) / 4  # many ties
        order, propensities = rank_with_policy(scores, n, policy, rng)
        assert order.tolist() == np.argsort(-scores, kind="stable").tolist()
        assert propensities.tolist() == [1.0] * n


def test_k_beyond_the_candidates_ranks_them_all() -> None:
    order, p = rank_with_policy(SCORES, 99, Policy("softmax"), np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(SCORES.size)) and p.size == SCORES.size


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: Policy("epsilon", epsilon=1.5), "epsilon must be in [0, 1], got 1.5"),
        (lambda: Policy("epsilon", epsilon=float("nan")), "epsilon must be in [0, 1], got nan"),
        (lambda: Policy("softmax", temperature=0.0), "temperature must be a finite number > 0"),
        (lambda: Policy("thompson"), "policy kind 'thompson' is not one of greedy"),  # type: ignore[arg-type]
        (lambda: slot_probabilities(SCORES, np.zeros(6, bool), Policy.greedy()), "no candidate"),
        (lambda: rank_with_policy(np.array([0.1, np.inf]), 1, Policy.greedy(), None), "index 1"),  # type: ignore[arg-type]
        (lambda: ranking_propensities(SCORES, np.array([1, 1]), Policy.greedy()), "twice"),
    ],
)
def test_bad_policies_and_scores_are_refused_by_name(make, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyError) as caught:
        make()
    assert needle in str(caught.value)


def test_explored_marks_the_picks_below_the_best_remaining() -> None:
    # 4 (0.9) is best; 1 and 3 tie at 0.7, so 3 before 1 is no exploration; 2 before 0 is.
    order = np.array([4, 3, 1, 2, 0, 5])
    assert explored(SCORES, order).tolist() == [False, False, False, True, True, False]
    greedy, _ = rank_with_policy(SCORES, 6, Policy.greedy(), np.random.default_rng(0))
    assert not explored(SCORES, greedy).any()


def test_a_policy_keeps_only_the_parameter_its_kind_reads() -> None:
    assert Policy.of("greedy", 0.1, 0.5) == Policy.greedy()
    assert Policy.of("epsilon", 0.1, 0.5).as_dict() == {"kind": "epsilon", "epsilon": 0.1}
    assert Policy.of("softmax", 0.1, 0.5).as_dict() == {"kind": "softmax", "temperature": 0.5}


def test_the_committed_policy_vectors_are_what_the_policy_computes() -> None:
    """client_js/test/policy_vectors.json, which the browser's port is tested against, is
    regenerated (`fedlearn vectors`) whenever the policies change."""
    committed = orjson.loads(POLICY_VECTORS.read_bytes())
    fresh = orjson.loads(orjson.dumps(make_policy_vectors()))
    assert_close(committed, fresh, "policy_vectors")
