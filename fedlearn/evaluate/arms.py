"""The arms of a replay built on our model: frozen base, global online model, clones, clones
with aggregation.

Every arm speaks one verb, :meth:`Arm.process`: given the next block of live events in time
order, predict each one and then learn from it (progressive validation), and return the
predictions. The replay feeds all arms the same blocks, so they are scored on the same events.
Our arms push a whole block through :func:`~fedlearn.model.learn_many`: clones of different
users are independent, so applying each user's events in order is the same as time order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedlearn.model import Base, Clone, Delta, learn_many
from fedlearn.model.batch import learn_many_shadow
from fedlearn.model.gating import Gate, GateSettings
from fedlearn.model.hashinit import init_latents
from fedlearn.model.metrics import log_loss_one

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

    def __init__(
        self,
        base: Base,
        *,
        lr: float,
        bias_lr: float | None = None,
        l2: float = 0.0,
        name: str = "clones",
    ) -> None:
        self.name = name
        self.base = base
        self.lr, self.bias_lr, self.l2 = lr, bias_lr, l2
        self.deltas: dict[str, Delta] = {}

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        return learn_many(self.base, self.deltas, block, self.lr, self.l2, self.bias_lr)


class GlobalArm(ClonesArm):
    """One online model shared by everybody: the base keeps learning from every event."""

    def __init__(self, base: Base, *, name: str = "global", **kw: Any) -> None:
        super().__init__(base, name=name, **kw)

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        return super().process([(_EVERYONE, x, y) for _, x, y in block])


AGG_RULES = ("row-mean", "mean")
# A user's own row (see fedlearn.model.features.event_features) is private: folded into the
# base it would help nobody else, and the base is served to every client.
PRIVATE_PREFIXES = ("user=",)


class AggregatedClonesArm(ClonesArm):
    """Clones whose changes are folded back into the base after every block (a round).

    A round takes each participating user's change since the round began (their delta after
    minus before) and adds the average change to the base; rows the base did not have are
    added, so the base learns items that appeared after it was trained. Deltas are kept: a
    clone is the new base plus the user's delta, so returning users see the round's result.

    ``rule`` is how changes are averaged:

    - ``"row-mean"``: each row by the users who changed it. A film one user of the round
      rated moves by that user's change, as it would in a global model; rows everybody
      touches (genres, the intercept) move by the participants' mean. The default: it is
      what made aggregation pay off on MovieLens (see BENCHMARKS.md).
    - ``"mean"``: naive FedAvg, every row by all participants (a row a user did not touch
      counts as no change), so a film rated by one of 30 users moves by 1/30 of a step.

    A user's own row (``user=<id>``) is never folded in: see :data:`PRIVATE_PREFIXES`. The
    service's rounds (``fedlearn.aggregate``, FedAvg) use the same per-row rule, weighted by
    events and with clipping; this arm is the plain, unweighted rule the replay measures.
    """

    def __init__(
        self,
        base: Base,
        *,
        lr: float,
        bias_lr: float | None = None,
        l2: float = 0.0,
        rule: str = "row-mean",
        name: str = "clones-agg",
    ) -> None:
        if rule not in AGG_RULES:
            known = ", ".join(AGG_RULES)
            raise ValueError(f"aggregation rule must be one of {known}, got {rule!r}")
        super().__init__(base, lr=lr, bias_lr=bias_lr, l2=l2, name=name)
        self.rule = rule
        self.rounds = 0

    def process(self, block: Sequence[LabelledEvent]) -> np.ndarray:
        users = dict.fromkeys(user for user, _, _ in block)
        before = {u: self.deltas[u].copy() for u in users if u in self.deltas}
        predictions = super().process(block)
        self._fold(before, users)
        return predictions

    def _fold(self, before: dict[str, Delta], users: Mapping[str, None]) -> None:
        """One round: the block's users' changes folded into the base."""
        self.rounds += 1
        self.base = fold_changes(
            self.base,
            before,
            {u: self.deltas[u] for u in users},
            per_row=self.rule == "row-mean",
            version=f"{self.base.version}+{self.rounds}",
        )


class GatedClonesArm(AggregatedClonesArm):
    """Aggregated clones, each user served the clone or the base by the user's gate.

    The gate is the service's (``fedlearn.model.gating``): Hedge over the discounted log
    losses of the clone and of the base (scored in shadow on every event). The arm returns the
    served predictions and keeps both experts' predictions in ``clone_predictions`` and
    ``base_predictions``, so the replay can compare the gate with the better of the two per
    user.
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
        users = dict.fromkeys(user for user, _, _ in block)
        before = {u: self.deltas[u].copy() for u in users if u in self.deltas}
        clone, base = learn_many_shadow(
            self.base, self.deltas, block, self.lr, self.l2, self.bias_lr
        )
        served = np.empty(len(block))
        for i, ((user, _, y), pc, pb) in enumerate(zip(block, clone, base, strict=True)):
            gate = self.gates.setdefault(user, Gate())
            served[i] = pc if gate.serve(self.gating.eta) == "clone" else pb
            gate.update(log_loss_one(y, pc), log_loss_one(y, pb), self.gating.decay)
        self.clone_predictions.append(clone)
        self.base_predictions.append(base)
        self._fold(before, users)
        return served


def fold_changes(
    base: Base,
    before: Mapping[str, Delta],
    after: Mapping[str, Delta],
    *,
    per_row: bool = True,
    private: tuple[str, ...] = PRIVATE_PREFIXES,
    version: str | None = None,
) -> Base:
    """A new base: ``base`` plus the average of the users' changes ``after - before``.

    An absent ``before[user]`` is an empty delta (a user new this round). With ``per_row`` a
    row's change is averaged over the users who changed it, else over all users in ``after``.
    The intercept is averaged over all users. Rows whose name starts with one of ``private``
    are left out. Rows new to the base start from their deterministic latent, as they did in
    the clones, plus the change.
    """
    if not after:
        return base
    k = base.n_factors
    row_of: dict[str, int] = {}
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    d_w0 = 0.0
    for user, delta in after.items():
        w, v = delta.w.astype(np.float64), delta.v.astype(np.float64)
        old = before.get(user)
        if old is not None:
            w_old, v_old = old.lookup(delta.names)
            w, v = w - w_old, v - v_old
        d_w0 += delta.w0 - (old.w0 if old is not None else 0.0)
        moved = (w != 0) | (v != 0).any(axis=1)
        if private:
            shared = (not name.startswith(private) for name in delta.names)
            moved &= np.fromiter(shared, bool, len(delta.names))
        names = [name for name, m in zip(delta.names, moved.tolist(), strict=True) if m]
        rows = np.fromiter((row_of.setdefault(n, len(row_of)) for n in names), np.int64, len(names))
        parts.append((rows, w[moved], v[moved]))
    change_w = np.zeros(len(row_of))
    change_v = np.zeros((len(row_of), k))
    count = np.zeros(len(row_of))
    for rows, w, v in parts:
        # Rows are unique within one user's delta, so indexed addition is exact.
        change_w[rows] += w
        change_v[rows] += v
        count[rows] += 1
    divisor = count if per_row else np.full(len(row_of), float(len(after)))
    change_w /= divisor
    change_v /= divisor[:, None]

    names = list(row_of)
    new = [n for n in names if n not in base.index]
    new_row = {n: base.n_features + i for i, n in enumerate(new)}
    target = np.fromiter(
        (base.index[n] if n in base.index else new_row[n] for n in names),
        np.int64,
        len(names),
    )
    w = np.concatenate([base.w.astype(np.float64), np.zeros(len(new))])
    v = np.concatenate(
        [base.v.astype(np.float64), init_latents(new, k, base.init_seed, base.init_scale)]
    )
    w[target] += change_w
    v[target] += change_v
    return Base(
        base.features + new,
        base.w0 + d_w0 / len(after),
        w,
        v,
        version=version or base.version,
        init_seed=base.init_seed,
        init_scale=base.init_scale,
        hyper=base.hyper,
        meta=base.meta,
    )
