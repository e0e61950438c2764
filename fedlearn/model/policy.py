"""Exploration policies for ranking, with the propensity of every item shown.

A ranking of ``k`` slots is drawn one slot at a time: the policy gives every candidate still
available a probability of taking the next slot (``slot_probabilities``), one is drawn, and it
leaves the pool. The propensity logged for a shown item is the probability it had in the slot
it took, given the items shown before it. That is exactly what an off-policy estimator needs to
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


def _draw(p: np.ndarray, u: float) -> int:
    """The index whose cumulative-probability interval holds ``u`` in [0, 1).

    ``side="right"`` never lands on a zero-probability index; rounding at the top end falls
    back to the last index that has any probability.
    """
    cumulative = np.cumsum(p)
    i = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    if i >= p.size or p[i] == 0.0:
        i = int(np.flatnonzero(p)[-1])
    return i


def rank_with_policy(
    scores: np.ndarray, k: int, policy: Policy, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``k`` slots (at most all candidates) in order under ``policy``.

    Returns the candidate indices in slot order and each one's propensity in its slot. Greedy
    draws nothing from ``rng`` and equals a stable descending sort of ``scores``.
    """
    scores = _check_scores(scores)
    if k < 0:
        raise PolicyError(f"k must be >= 0, got {k}")
    k = min(k, scores.shape[0])
    if not policy.explores:
        return np.argsort(-scores, kind="stable")[:k], np.ones(k)
    available = np.ones(scores.shape[0], dtype=bool)
    order = np.empty(k, dtype=np.int64)
    propensities = np.empty(k)
    for slot in range(k):
        p = _slot_probabilities(scores, available, policy)
        i = _draw(p, float(rng.random()))
        order[slot], propensities[slot] = i, p[i]
        available[i] = False
    return order, propensities


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
    available = np.ones(scores.shape[0], dtype=bool)
    out = np.empty(len(order), dtype=bool)
    for slot, i in enumerate(order):
        out[slot] = scores[i] < scores[available].max()
        available[i] = False
    return out
