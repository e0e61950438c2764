"""The arms of a replay built on our model: frozen base, global online model, clones, clones
with aggregation.

Every arm speaks one verb, :meth:`Arm.process`: given the next block of live events in time
order, predict each one and then learn from it (progressive validation), and return the
predictions. The replay feeds all arms the same blocks, so they are scored on the same events.
Our online arms push a whole block through the trainer's own learning step
(:func:`fedlearn.trainer.apply.learn_clones`, with the service's :class:`CloneSettings`): clones
of different users are independent, so applying each user's events in order is the same as
time order, and what the replay measures is what the stream workers run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.fold import fold_and_rebase
from fedlearn.aggregate.strategies import RowUpdate
from fedlearn.model import Base, Clone, Delta
from fedlearn.model.features import USER_PREFIX
from fedlearn.model.gating import Gate, GateSettings, serve_then_update
from fedlearn.trainer.apply import CloneSettings, learn_clones

LabelledEvent = tuple[str, Mapping[str, float], int]

# The one "user" of the global arm: every event goes to the same clone, in time order.
_EVERYONE = "\0global"


class Arm(ABC):
    """A way of predicting live events; learns from each event after predicting it."""

    name: str

    @abstractmethod
    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        """Predict every event of ``block`` before learning from it; return the predictions."""


class FrozenArm(Arm):
    """The base as trained, never updated: what personalization has to beat."""

    def __init__(self, base: Base, name: str = "frozen") -> None:
        self.name = name
        self._clone = Clone(base)

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        return self._clone.predict_proba_many([x for _, x, _ in block])


class ClonesArm(Arm):
    """A clone per user (the shared base plus the user's delta), each learning online."""

    def __init__(self, base: Base, *, settings: CloneSettings, name: str = "clones") -> None:
        self.name = name
        self.base = base
        self.settings = settings
        self.deltas: dict[str, Delta] = {}

    def learn(self, block: Sequence[LabelledEvent]) -> tuple[np.ndarray, np.ndarray]:
        """The trainer's step on ``block``: the clones' and the base's predictions."""
        clone, base, _ = learn_clones(self.base, self.deltas, block, self.settings)
        return clone, base

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        return self.learn(block)[0]


class GlobalArm(ClonesArm):
    """One online model shared by everybody: the base keeps learning from every event."""

    def __init__(self, base: Base, *, settings: CloneSettings, name: str = "global") -> None:
        # One model: no row cap, and no per-user step decay (it has one "user").
        one = replace(settings, max_rows=None, lr_half_life=None)
        super().__init__(base, settings=one, name=name)

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        return super().process([(_EVERYONE, x, y) for _, x, y in block])


AGG_RULES = ("row-mean", "mean")


class AggregatedClonesArm(ClonesArm):
    """Clones whose changes are folded back into the base after every block (a round).

    A round folds each participating user's change since the round began (their delta after
    minus before, weighted by the user's events of the block) into the base exactly as the
    service's rounds do (:func:`fedlearn.aggregate.fold.fold_pairs` with the service's
    default :class:`~fedlearn.aggregate.config.AggregationConfig`: its strategy, clipping,
    weights, ``min_users`` and ``min_row_users``; a user's own ``user=<id>`` row stays
    private, by the fold's rule). Rows the base did not have are added, so the base
    learns items that appeared after it was trained. Each contributor's delta is then rebased on
    the new base as the service does (``aggregate.rebase``: the user's share of the step is
    taken out, rows left at zero dropped), so a returning user gets the others' part of the
    round and its own change once.

    ``rule`` is how changes are averaged:

    - ``"row-mean"``: each row by the users who changed it (the service's rule). A film one
      user of the round rated moves by that user's change, as it would in a global model;
      rows everybody touches (genres, the intercept) move by the participants' mean.
    - ``"mean"``: naive FedAvg, every row by all participants (a row a user did not touch
      counts as no change), so a film rated by one of 30 users moves by 1/30 of a step.
    """

    def __init__(
        self,
        base: Base,
        *,
        rule: str = "row-mean",
        name: str = "clones-agg",
        aggregation: AggregationConfig | None = None,
        seed: int = 0,
        learned_start: bool = False,
        **kw: Any,
    ) -> None:
        """``aggregation``: the rounds' config (default: the service's); ``seed`` seeds the
        rounds' noise (none unless the config asks for it); ``learned_start`` (a lever, replay
        only): a user new to the base starts their own row from the mean of the last round's
        participants' own rows (Reptile-like) instead of its hash-random latent; ``kw``:
        :class:`ClonesArm`'s."""
        if rule not in AGG_RULES:
            known = ", ".join(AGG_RULES)
            raise ValueError(f"aggregation rule must be one of {known}, got {rule!r}")
        super().__init__(base, name=name, **kw)
        self.rule = rule
        self.rounds = 0
        self.config = aggregation or AggregationConfig()
        self._state: RowUpdate | None = None  # the strategy's (FedAvgM's momentum)
        self._rng = np.random.default_rng(seed)
        self.learned_start = learned_start
        self.start_row: tuple[float, np.ndarray] | None = None  # (w, v) of a new user's row

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        return self.learn_and_fold(block)[0]

    def learn_and_fold(self, block: Sequence[LabelledEvent]) -> tuple[np.ndarray, np.ndarray]:
        """Test-then-train ``block`` on the clones, then fold their changes (one round)."""
        users = Counter(user for user, _, _ in block)
        if self.start_row is not None:
            self._start_new_users(users)
        before = {u: self.deltas[u].copy() for u in users if u in self.deltas}
        predictions = self.learn(block)
        if self.learned_start:
            self.start_row = self._mean_own_row(users)
        self._fold(before, users)
        return predictions

    def _mean_own_row(self, users: Counter[str]) -> tuple[float, np.ndarray]:
        """The mean of ``users``' own rows (``user=<id>``, base plus delta) as they stand."""
        names = [USER_PREFIX + u for u in users]
        bw, bv = self.base.rows(names)
        rows = [self.deltas[u].lookup([n]) for u, n in zip(users, names, strict=True)]
        w = bw + np.array([dw[0] for dw, _ in rows])
        v = bv + np.array([dv[0] for _, dv in rows])
        return float(w.mean()), v.mean(axis=0)

    def _start_new_users(self, users: Counter[str]) -> None:
        """Give users the base does not know, and who have no clone yet, the learned start."""
        w, v = self.start_row
        for user in users:
            name = USER_PREFIX + user
            if user in self.deltas or name in self.base.index:
                continue
            bw, bv = self.base.rows([name])
            row = {"w0": 0.0, "features": [name], "w": [w - bw[0]], "v": [(v - bv[0]).tolist()]}
            self.deltas[user] = Delta.from_json(row, self.base.n_factors)

    def _fold(self, before: Mapping[str, Delta], users: Counter[str]) -> None:
        """One round: the block's users' changes folded into the base (weighted by their
        events of the block); a round with too few users leaves the base as it was."""
        self.rounds += 1
        new, self._state, _ = fold_and_rebase(
            self.base, self.deltas, users, before, self.config,
            version=f"{self.base.version}+{self.rounds}", state=self._state, rng=self._rng,
            per_row=self.rule == "row-mean",
        )  # fmt: skip
        if new is not None:
            self.base = new


class GatedClonesArm(AggregatedClonesArm):
    """Aggregated clones, each user served by the user's gate.

    The gate is the service's (``fedlearn.model.gating``): Hedge over the discounted log
    losses of the clone and of the base (scored in shadow on every event), served through the
    trainer's own :func:`~fedlearn.model.gating.serve_then_update` (the likelier expert, or
    their mixture when ``gating.blend``). The arm returns the served predictions and keeps both
    experts' predictions in ``clone_predictions`` and ``base_predictions``, so the replay can
    compare the gate with the better of the two per user.
    """

    def __init__(
        self, base: Base, *, gating: GateSettings, name: str = "clones-gated", **kw: Any
    ) -> None:
        super().__init__(base, name=name, **kw)
        self.gating = gating
        self.gates: dict[str, Gate] = {}
        self.clone_predictions: list[np.ndarray] = []
        self.base_predictions: list[np.ndarray] = []

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        clone, base = self.learn_and_fold(block)
        y = np.fromiter((y for _, _, y in block), np.float64, len(block))
        users = [user for user, _, _ in block]
        served = serve_then_update(self.gates, users, y, clone, base, self.gating)
        self.clone_predictions.append(clone)
        self.base_predictions.append(base)
        return served
