"""Exploration policies for ranking, with the propensity of every item shown.

A ranking of ``k`` slots follows the law of drawing one slot at a time: the policy gives every
candidate still available a probability of taking the next slot (``slot_probabilities``), one
is drawn, and it leaves the pool (``rank_with_policy`` draws with that law in fewer steps). The
propensity logged for a shown item is the probability it had in the slot it took, given the
items shown before it. That is exactly what an off-policy estimator needs to
reweight a logged slot, and it is always in (0, 1] because a drawn item had a positive chance.

- ``greedy``: the best available item, ties to the lowest index; the ranking served before
  exploration existed (a stable descending sort), every propensity 1.
- ``epsilon``: the best item with probability 1 - epsilon, else any available one uniformly
  (so the best item's propensity is 1 - epsilon + epsilon / m over m available items).
- ``softmax``: Plackett-Luce, each available item in proportion to exp(score / temperature).

Pure numpy; the browser client carries a port held to these numbers by shared vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from fedlearn.model.errors import PolicyError

PolicyKind = Literal["greedy", "epsilon", "softmax"]
POLICY_KINDS: tuple[str, ...] = get_args(PolicyKind)


@dataclass(frozen=True)
class Policy:
    """How a ranking explores. ``epsilon`` is read by ``epsilon`` only, ``temperature`` by
    ``softmax`` only; both are validated whatever the kind, so a policy never holds a value
    that would be wrong if its kind changed."""

    kind: PolicyKind
    epsilon: float = 0.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise PolicyError(f"policy kind {self.kind!r} is not one of {', '.join(POLICY_KINDS)}")
        if not (math.isfinite(self.epsilon) and 0.0 <= self.epsilon <= 1.0):
            raise PolicyError(f"epsilon must be in [0, 1], got {self.epsilon!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0.0):
            raise PolicyError(f"temperature must be a finite number > 0, got {self.temperature!r}")

    @classmethod
    def greedy(cls) -> Policy:
        """The policy that never explores."""
        return cls("greedy")

    @classmethod
    def of(cls, kind: str, epsilon: float, temperature: float) -> Policy:
        """The policy of ``kind`` keeping only the parameter it reads (the other at its
        default), so two spellings of one policy compare and log alike."""
        if kind == "epsilon":
            return cls("epsilon", epsilon=epsilon)
        if kind == "softmax":
            return cls("softmax", temperature=temperature)
        return cls(kind)  # type: ignore[arg-type]  # __post_init__ names a bad kind

    def as_dict(self) -> dict[str, str | float]:
        """The JSON form logged and sent: ``kind`` and the one parameter it reads."""
        if self.kind == "epsilon":
            return {"kind": "epsilon", "epsilon": self.epsilon}
        if self.kind == "softmax":
            return {"kind": "softmax", "temperature": self.temperature}
        return {"kind": self.kind}

    @property
    def explores(self) -> bool:
        """Whether a ranking under this policy can differ from the greedy one."""
        return self.kind == "softmax" or (self.kind == "epsilon" and self.epsilon > 0.0)


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise PolicyError(f"scores must be one-dimensional, got shape {scores.shape}")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise PolicyError(f"score {scores[bad[0]]!r} at index {int(bad[0])} is not finite")
    return scores


def _slot_probabilities(scores: np.ndarray, available: np.ndarray, policy: Policy) -> np.ndarray:
    """``slot_probabilities`` on inputs already checked."""
    open_ = np.flatnonzero(available)
    p = np.zeros(scores.shape[0])
    best = open_[int(np.argmax(scores[open_]))]  # argmax keeps the first of equal maxima
    if policy.kind == "greedy":
        p[best] = 1.0
    elif policy.kind == "epsilon":
        p[open_] = policy.epsilon / open_.size
        p[best] += 1.0 - policy.epsilon
    else:
        # Shifting by the maximum keeps exp() in (0, 1]. A gap so large that it overflows to
        # -inf gives the weight 0 it should have, so that overflow is no error.
        with np.errstate(over="ignore"):
            w = np.exp((scores[open_] - scores[best]) / policy.temperature)
        p[open_] = w / w.sum()
    return p


def slot_probabilities(scores: np.ndarray, available: np.ndarray, policy: Policy) -> np.ndarray:
    """The probability of each candidate taking the next slot, given the ``available`` mask.

    Zero for unavailable candidates; sums to 1 over the available ones.
    """
    scores = _check_scores(scores)
    available = np.asarray(available, dtype=bool)
    if available.shape != scores.shape:
        raise PolicyError(f"available has shape {available.shape}, scores {scores.shape}")
    if not available.any():
        raise PolicyError("no candidate is available for the next slot")
    return _slot_probabilities(scores, available, policy)


def _epsilon_ranking(
    scores: np.ndarray, k: int, epsilon: float, uniforms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-greedy, one uniform per slot: below ``epsilon`` it also picks which of the m
    items left (best first) takes the slot, else the best left does. O(n) list work a slot."""
    left = np.argsort(-scores, kind="stable").tolist()  # best first, ties to the lower index
    order, propensities = np.empty(k, dtype=np.int64), np.empty(k)
    for slot, u in enumerate(uniforms.tolist()):
        m = len(left)
        r = min(int(u / epsilon * m), m - 1) if u < epsilon else 0
        order[slot] = left.pop(r)
        propensities[slot] = epsilon / m + (1.0 - epsilon if r == 0 else 0.0)
    return order, propensities


def _softmax_ranking(
    scores: np.ndarray, k: int, temperature: float, uniforms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Plackett-Luce by the Gumbel-max trick: sorting log-weights plus Gumbel noise draws the
    whole ranking at once with the same law as slot after slot. A slot's propensity is its
    weight over the weights still left, summed from the end in log space (no cancellation)."""
    # Log-weights below -1e300 (score gaps past 1e300 x temperature) are held there, so the
    # sums stay finite; such an item is last anyway.
    with np.errstate(over="ignore", divide="ignore"):
        log_w = np.maximum((scores - scores.max()) / temperature, -1e300)
        keys = log_w - np.log(-np.log1p(-uniforms))
    order = np.argsort(-keys, kind="stable")
    log_left = np.logaddexp.accumulate(log_w[order][::-1])[::-1]
    return order[:k], np.exp(log_w[order[:k]] - log_left[:k])


def rank_with_policy(
    scores: np.ndarray, k: int, policy: Policy, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``k`` slots (at most all candidates) in order under ``policy``.

    Returns the candidate indices in slot order and each one's propensity in its slot. Greedy
    draws nothing from ``rng`` and equals a stable descending sort of ``scores``; epsilon draws
    ``k`` uniforms, softmax one per candidate (the browser's port draws the same way).
    """
    scores = _check_scores(scores)
    if k < 0:
        raise PolicyError(f"k must be >= 0, got {k}")
    k = min(k, scores.shape[0])
    if not policy.explores:
        return np.argsort(-scores, kind="stable")[:k], np.ones(k)
    if policy.kind == "epsilon":
        return _epsilon_ranking(scores, k, policy.epsilon, rng.random(k))
    return _softmax_ranking(scores, k, policy.temperature, rng.random(scores.shape[0]))


def ranking_propensities(scores: np.ndarray, order: np.ndarray, policy: Policy) -> np.ndarray:
    """The propensity ``policy`` gives each item of a ranking ``order`` in its slot (0 when it
    could not have put it there): the logged ranking's probabilities under another policy."""
    scores = _check_scores(scores)
    available = np.ones(scores.shape[0], dtype=bool)
    out = np.empty(len(order))
    for slot, i in enumerate(order):
        if not available[i]:
            raise PolicyError(f"index {int(i)} is ranked twice (again in slot {slot})")
        out[slot] = _slot_probabilities(scores, available, policy)[i]
        available[i] = False
    return out


def explored(scores: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Whether each pick of a ranking ``order`` scored below the best item still available
    then: the picks exploration made (a tie with the best is no exploration)."""
    scores = _check_scores(scores)
    order = np.asarray(order, dtype=np.int64)
    shown = scores[order]
    unshown = np.ones(scores.shape[0], dtype=bool)
    unshown[order] = False
    best_unshown = scores[unshown].max() if unshown.any() else -np.inf
    # The best left at a slot: the best of the picks from that slot on, or of the unshown.
    best_left = np.maximum(np.maximum.accumulate(shown[::-1])[::-1], best_unshown)
    return shown < best_left
