"""Per-user gating: serve the clone or the base, whichever has predicted this user better.

Personalization does not help everyone: on-device studies find a share of users whose own model
does worse than the global one. Every event is scored by both (the base in shadow), so each user
has two experts with full-information losses, and Hedge (exponential weights over discounted
cumulative log loss) picks between them online. Discounting (``decay``) forgets old evidence,
so a clone that recovers is served again. The state is three floats a user.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

_FORMAT = struct.Struct("<ddQ")


@dataclass(slots=True)
class Gate:
    """Discounted cumulative log losses of the clone and the base on one user's events."""

    loss_clone: float = 0.0
    loss_base: float = 0.0
    events: int = 0

    def update(self, clone_loss: float, base_loss: float, decay: float) -> None:
        self.loss_clone = decay * self.loss_clone + clone_loss
        self.loss_base = decay * self.loss_base + base_loss
        self.events += 1

    def p_clone(self, eta: float) -> float:
        """Hedge's weight on the clone, ``sigmoid(eta * (L_base - L_clone))``."""
        z = eta * (self.loss_base - self.loss_clone)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def serve(self, eta: float) -> str:
        """``"clone"`` unless the base has clearly been better (ties go to the clone)."""
        return "clone" if self.p_clone(eta) >= 0.5 else "base"

    def to_bytes(self) -> bytes:
        return _FORMAT.pack(self.loss_clone, self.loss_base, self.events)

    @classmethod
    def from_bytes(cls, blob: bytes | None) -> Gate:
        if not blob:
            return cls()
        return cls(*_FORMAT.unpack(blob))


@dataclass(frozen=True, slots=True)
class GateSettings:
    decay: float = 0.95
    eta: float = 1.0


def log_loss(y: int, p: float, eps: float = 1e-12) -> float:
    p = min(max(p, eps), 1.0 - eps)
    return -math.log(p) if y else -math.log(1.0 - p)
