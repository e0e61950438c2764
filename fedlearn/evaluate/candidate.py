"""A candidate configuration's model as the service runs it, for the simulator and for
off-policy evaluation.

Scoring is the rank route's (``fedlearn.serving.clones.rank``): the user's clone, the base
plus the user's delta, scores every candidate with :meth:`Clone.predict_proba_many`. Learning
is the trainer's step (``learn_clones``, through the replay's arms), one block of events at a
time as the trainer applies a batch; with ``aggregate`` every block is also a round folded
into the base by the one fold. Between two blocks the scores see the state the last block
left, as a rank call sees the last commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedlearn.config import Settings
from fedlearn.evaluate.arms import AggregatedClonesArm, ClonesArm, LabelledEvent
from fedlearn.model import Base, Clone
from fedlearn.trainer.apply import CloneSettings


def service_settings(base: Base, settings: Settings | None = None) -> CloneSettings:
    """The clones' step as the service configures it for ``base`` (``Settings.clone_hyper``)."""
    return CloneSettings(**(settings or Settings()).clone_hyper(base.hyper))


class CandidateModel:
    """Per-user clones of ``base`` that learn with ``settings`` (and fold, with ``aggregate``)."""

    def __init__(self, base: Base, settings: CloneSettings, *, aggregate: bool = True) -> None:
        self.arm: ClonesArm = (
            AggregatedClonesArm(base, settings=settings)
            if aggregate
            else ClonesArm(base, settings=settings)
        )

    @property
    def base(self) -> Base:
        return self.arm.base

    def score(self, user: str, samples: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The user's clone's click probability of every sample; nothing is learned."""
        return Clone(self.arm.base, self.arm.deltas.get(user)).predict_proba_many(samples)

    def learn(self, block: Sequence[LabelledEvent]) -> None:
        """Test-then-train ``block`` (time order) on the clones; a round, if aggregating."""
        if block:
            self.arm.process(block)
