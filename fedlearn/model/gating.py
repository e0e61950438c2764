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
import zlib
from dataclasses import dataclass

from fedlearn.model.errors import ModelFormatError

# The record: two float64 losses and a uint64 event count (24 bytes, format 1), followed since
# format 2 by the CRC-32 of those 24 bytes (28 bytes). Its length tells the format.
_FORMAT = struct.Struct("<ddQ")
_CRC = struct.Struct("<I")


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

    def p_clone(self, eta: float) -> float:
        """Hedge's weight on the clone, ``sigmoid(eta * (L_base - L_clone))``."""
        z = eta * (self.loss_base - self.loss_clone)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def serve(self, eta: float) -> str:
        """``"clone"`` unless the base has clearly been better (ties go to the clone)."""
        return "clone" if self.p_clone(eta) >= 0.5 else "base"

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
