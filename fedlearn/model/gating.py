"""Per-user gating: serve the clone, the base, or their mixture, by how well each has
predicted this user.

Personalization does not help everyone: on-device studies find a share of users whose own model
does worse than the global one. Every event is scored by both (the base in shadow), so each user
has two experts with full-information losses, and Hedge (exponential weights over discounted
cumulative log loss) weighs them online. Discounting (``decay``) forgets old evidence, so a
clone that recovers is served again. The state is three floats a user.

What a user is served is always ``w p_clone + (1 - w) p_base`` (:func:`served`), with ``w``
the gate's :meth:`Gate.clone_weight`: Hedge's weight itself when ``blend`` is on (the mixture),
else 1 or 0 (the likelier expert, a switch). The trainer, the API, the replay and the browser
client (``client_js/src/gating.js``, parity vectors) all serve through this one formula.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from fedlearn.model.batch import user_index
from fedlearn.model.errors import ModelFormatError
from fedlearn.model.metrics import log_losses

# The record: two float64 losses and a uint64 event count (24 bytes, format 1), followed since
# format 2 by the CRC-32 of those 24 bytes (28 bytes). Its length tells the format.
_FORMAT = struct.Struct("<ddQ")
_CRC = struct.Struct("<I")
_LOSS_CLONE, _LOSS_BASE, _EVENTS = (attrgetter(a) for a in ("loss_clone", "loss_base", "events"))


@dataclass(slots=True)
class Gate:
    """Discounted cumulative log losses of the clone and the base on one user's events."""

    loss_clone: float = 0.0
    loss_base: float = 0.0
    events: int = 0

    def update(self, clone_loss: float, base_loss: float, decay: float) -> None:
        if not (math.isfinite(clone_loss) and math.isfinite(base_loss)):
            return  # a clone that went non-finite is reset; its score is no evidence
        self.loss_clone = decay * self.loss_clone + clone_loss
        self.loss_base = decay * self.loss_base + base_loss
        self.events += 1

    def p_clone(self, eta: float, prior: float = 0.0) -> float:
        """Hedge's weight on the clone, ``sigmoid(eta * (L_base - L_clone) + prior)``:
        ``prior`` is the clone's log odds before any evidence (a new user's first weight)."""
        z = eta * (self.loss_base - self.loss_clone) + prior
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def serve(self, eta: float, prior: float = 0.0) -> str:
        """``"clone"`` unless the base has clearly been better (ties go to the clone)."""
        return "clone" if self.p_clone(eta, prior) >= 0.5 else "base"

    def clone_weight(self, eta: float, blend: bool, prior: float = 0.0) -> float:
        """The clone's weight in what the user is served: Hedge's weight when blending, else
        1 or 0 as :meth:`serve` picks (so a switch serves exactly one expert's score)."""
        if blend:
            return self.p_clone(eta, prior)
        return 1.0 if self.serve(eta, prior) == "clone" else 0.0

    def to_bytes(self) -> bytes:
        record = _FORMAT.pack(self.loss_clone, self.loss_base, self.events)
        return record + _CRC.pack(zlib.crc32(record))

    @classmethod
    def from_bytes(cls, blob: bytes | None) -> Gate:
        """Decode a gate record (empty: a new gate); :class:`ModelFormatError` if malformed."""
        if not blob:
            return cls()
        blob = bytes(blob)
        if len(blob) not in (_FORMAT.size, _FORMAT.size + _CRC.size):
            raise ModelFormatError(
                f"gate record is {len(blob)} bytes, expected {_FORMAT.size} or "
                f"{_FORMAT.size + _CRC.size}"
            )
        record = blob[: _FORMAT.size]
        if len(blob) > _FORMAT.size and _CRC.unpack_from(blob, _FORMAT.size)[0] != zlib.crc32(
            record
        ):
            raise ModelFormatError("gate record checksum mismatch: the record is corrupt")
        loss_clone, loss_base, events = _FORMAT.unpack(record)
        if not (0 <= loss_clone < math.inf and 0 <= loss_base < math.inf):
            raise ModelFormatError(
                f"gate losses must be finite and >= 0, got {loss_clone!r} and {loss_base!r}"
            )
        return cls(loss_clone, loss_base, events)


@dataclass(frozen=True, slots=True)
class GateSettings:
    decay: float = 0.95
    eta: float = 1.0
    # Serve the Hedge mixture of clone and base, not the likelier one: chosen on rolling folds
    # of the first 30 % of both logs (BENCHMARKS.md, issue 11), +0.003 AUC / +0.004-0.006 gAUC.
    blend: bool = True
    # The clone's log odds before any evidence (a new user's first weight is sigmoid(prior)).
    # A replay lever only: the service's gate has no prior (0), so no setting and no JS port.
    prior: float = 0.0

    def weight(self, gate: Gate) -> float:
        """``gate``'s :meth:`Gate.clone_weight` under these settings."""
        return gate.clone_weight(self.eta, self.blend, self.prior)


def served(
    clone_p: float | np.ndarray, base_p: float | np.ndarray, weight: float | np.ndarray
) -> float | np.ndarray:
    """What a user is served: ``weight * clone_p + (1 - weight) * base_p``. A weight of 1 gives
    the clone's score exactly, 0 the base's (both are probabilities, so the mixture is one)."""
    return weight * clone_p + (1.0 - weight) * base_p


def serve_then_update(
    gates: MutableMapping[str, Gate],
    users: Sequence[str],
    labels: np.ndarray,
    clone_p: np.ndarray,
    base_p: np.ndarray,
    settings: GateSettings,
    *,
    index: tuple[list[str], np.ndarray] | None = None,
) -> np.ndarray:
    """Events in order: each served by its user's gate as it stood before the event (what
    the user saw), then the gate updated with both experts' losses on it. ``gates`` is
    updated in place (a user without one starts a new :class:`Gate`); the served predictions
    are returned.

    The loop runs compiled (``kernel.gate_steps``) over the batch's users' gates as arrays:
    per event it was a tenth of the trainer's ``apply_batch``. ``index`` is
    ``batch.user_index(users)`` when the caller has it already."""
    from fedlearn.model.kernel import gate_steps

    batch_users, uid = user_index(users) if index is None else index
    held = []
    for user in batch_users:
        gate = gates.get(user)
        if gate is None:
            gate = gates[user] = Gate()
        held.append(gate)
    loss_clone = np.fromiter(map(_LOSS_CLONE, held), np.float64, len(held))
    loss_base = np.fromiter(map(_LOSS_BASE, held), np.float64, len(held))
    n_events = np.fromiter(map(_EVENTS, held), np.int64, len(held))
    weights = gate_steps(
        uid, log_losses(labels, clone_p), log_losses(labels, base_p), loss_clone, loss_base,
        n_events, settings.decay, settings.eta, settings.prior, settings.blend,
    )  # fmt: skip
    for gate, lc, lb, n in zip(
        held, loss_clone.tolist(), loss_base.tolist(), n_events.tolist(), strict=True
    ):
        gate.loss_clone, gate.loss_base, gate.events = lc, lb, n
    return served(clone_p, base_p, weights)
