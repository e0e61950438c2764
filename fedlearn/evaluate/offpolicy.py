"""Off-policy evaluation of candidate policies on a log of decisions.

The candidate's model (:class:`~fedlearn.evaluate.candidate.CandidateModel`) walks the log in
time order, one block at a time, as the service would have run it on the same traffic: it
scores each decision's candidates as they stood, and then learns the block's logged events
(the shown item and its click). From its scores, each candidate policy's slot-0 probabilities
(``fedlearn.model.policy.slot_probabilities``, the rank route's) give the weights of
:func:`fedlearn.evaluate.ope.estimate`; the model's scores are DR's reward model. In the
simulator, where every candidate's true click probability is known, the truth of the same
estimand is computed beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedlearn.evaluate.candidate import CandidateModel
from fedlearn.evaluate.decisions import Decision, users_of
from fedlearn.evaluate.ope import Estimate, Scored, estimate
from fedlearn.model.policy import Policy, slot_probabilities


@dataclass(frozen=True)
class PolicyValue:
    """A candidate policy's estimates; ``truth`` only where the log knows it (simulator)."""

    policy: Policy
    estimates: dict[str, Estimate]
    truth: float = math.nan

    def to_dict(self) -> dict[str, object]:
        return {
            "policy": policy_name(self.policy),
            "truth": None if math.isnan(self.truth) else self.truth,
            **{name: e.to_dict() for name, e in self.estimates.items()},
        }


def policy_name(policy: Policy) -> str:
    """``greedy``, ``epsilon:0.1``, ``softmax:0.5``: how the CLI and the tables spell it."""
    if policy.kind == "greedy":
        return "greedy"
    return f"{policy.kind}:{policy.epsilon if policy.kind == 'epsilon' else policy.temperature:g}"


def evaluate_policies(
    decisions: Sequence[Decision],
    model: CandidateModel,
    policies: Sequence[Policy],
    *,
    block: int,
) -> list[PolicyValue]:
    """IPS, SNIPS and DR estimates of every policy's top-slot click rate (module docstring)."""
    if block < 1:
        raise ValueError(f"block must be at least 1 decision, got {block}")
    n = len(decisions)
    columns = {name: np.zeros((len(policies), n)) for name in ("target", "q_target", "truth")}
    q_logged = np.zeros(n)
    for lo in range(0, n, block):
        chunk = decisions[lo : lo + block]
        for i, d in enumerate(chunk, lo):
            scores = model.score(d.user, d.candidates)
            available = np.ones(len(scores), dtype=bool)
            q_logged[i] = scores[d.shown]
            for j, policy in enumerate(policies):
                probs = slot_probabilities(scores, available, policy)
                columns["target"][j, i] = probs[d.shown]
                columns["q_target"][j, i] = probs @ scores
                columns["truth"][j, i] = math.nan if d.p_true is None else probs @ d.p_true
        model.learn([(d.user, d.candidates[d.shown], d.click) for d in chunk])
    users = users_of(d.user for d in decisions)
    reward = np.fromiter((d.click for d in decisions), np.float64, n)
    propensity = np.fromiter((d.propensity for d in decisions), np.float64, n)
    values = []
    for j, policy in enumerate(policies):
        scored = Scored(users, reward, propensity, columns["target"][j], q_logged,
                        columns["q_target"][j])  # fmt: skip
        values.append(PolicyValue(policy, estimate(scored), float(columns["truth"][j].mean())))
    return values
