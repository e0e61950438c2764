"""Run a policy in the simulated world through the service's model code.

Every step, each session's user is offered candidates; the user's clone scores them as the
rank route does, the policy (``fedlearn.model.policy``, the one the rank route uses) picks the
item of the top slot and says with what probability, the world draws the click, and the
step's events are then learned as one trainer batch and folded as one round
(:class:`~fedlearn.evaluate.candidate.CandidateModel`). The result is the click rate over time
and, if asked, the log of decisions with their propensities: the input of off-policy
evaluation, with the true click probability of every candidate for checking it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedlearn.data.simulator import World
from fedlearn.evaluate.arms import LabelledEvent
from fedlearn.evaluate.candidate import CandidateModel
from fedlearn.evaluate.decisions import Decision
from fedlearn.model import event_features
from fedlearn.model.policy import Policy, rank_with_policy


@dataclass
class Trajectory:
    """What a policy did in the world: per step, the clicks and the expected clicks (the sum
    of the shown items' true click probabilities, the same mean with less noise)."""

    policy: Policy
    sessions_per_step: int
    clicks: np.ndarray
    expected: np.ndarray
    decisions: list[Decision] = field(default_factory=list)

    def click_rate(self) -> float:
        return float(self.clicks.sum() / (len(self.clicks) * self.sessions_per_step))

    def cumulative_rate(self) -> np.ndarray:
        """Expected click rate of all sessions up to each step (the long-horizon curve)."""
        steps = np.arange(1, len(self.expected) + 1)
        return np.cumsum(self.expected) / (steps * self.sessions_per_step)


class _Features:
    """Feature dicts of (user, item) impressions, built by the service's one recipe."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._items: dict[int, Mapping[str, float]] = {}

    def of(self, user: int, item: int) -> dict[str, float]:
        features = self._items.get(item)
        if features is None:
            features = self._items[item] = self.world.item_features(item)
        return event_features(World.user_id(user), World.item_id(item), None, features)


def run_policy(
    world: World,
    model: CandidateModel,
    policy: Policy,
    *,
    steps: int | None = None,
    seed: int = 0,
    record: bool = False,
) -> Trajectory:
    """Run ``policy`` for ``steps`` steps (the world's horizon by default), ``model`` learning
    from what it showed; ``seed`` seeds the policy's own draws. ``record`` keeps the decisions."""
    steps = world.config.steps if steps is None else steps
    rng = np.random.default_rng(seed)
    features = _Features(world)
    n = world.config.sessions_per_step
    clicks, expected = np.zeros(steps), np.zeros(steps)
    decisions: list[Decision] = []
    for t in range(steps):
        step = world.step(t)
        truth = world.click_probability(step.users, step.offers, t)
        block: list[LabelledEvent] = []
        for s in range(n):
            user = int(step.users[s])
            samples = [features.of(user, int(item)) for item in step.offers[s]]
            order, propensities = rank_with_policy(model.score(World.user_id(user), samples),
                                                   1, policy, rng)  # fmt: skip
            shown = int(order[0])
            click = int(step.uniforms[s, shown] < truth[s, shown])
            clicks[t] += click
            expected[t] += truth[s, shown]
            block.append((World.user_id(user), samples[shown], click))
            if record:
                decisions.append(
                    Decision(World.user_id(user), tuple(samples), shown,
                             float(propensities[0]), click, truth[s])
                )  # fmt: skip
        model.learn(block)
    return Trajectory(policy, n, clicks, expected, decisions)


def warmup_samples(world: World, n: int, *, seed: int = 0) -> list[tuple[dict[str, float], int]]:
    """``n`` impressions of the first catalog shown uniformly at random before step 0, with
    clicks drawn from the tastes of step 0: what the first base is trained on."""
    rng = np.random.default_rng([world.config.seed, seed, 2**31])
    users = rng.integers(0, world.config.n_users, n)
    items = rng.choice(world.live_items(0), n)
    p = world.click_probability(users, items, 0)
    clicks = rng.random(n) < p
    features = _Features(world)
    return [
        (features.of(int(u), int(i)), int(c))
        for u, i, c in zip(users.tolist(), items.tolist(), clicks.tolist(), strict=True)
    ]
