"""The serving gate picks whichever of clone and base predicted the user better, and recovers."""

from __future__ import annotations

import pytest

from fedlearn.model import ModelFormatError
from fedlearn.model.gating import Gate, GateSettings
from fedlearn.model.metrics import log_loss_one as log_loss

SETTINGS = GateSettings(decay=0.9, eta=1.0)


def feed(gate: Gate, n: int, clone_p: float, base_p: float, y: int = 1) -> None:
    for _ in range(n):
        gate.update(log_loss(y, clone_p), log_loss(y, base_p), SETTINGS.decay)


def test_a_new_user_is_served_the_clone() -> None:
    assert Gate().serve(SETTINGS.eta) == "clone"


def test_a_clone_worse_than_the_base_is_gated_off_then_back_on_when_it_recovers() -> None:
    gate = Gate()
    feed(gate, 20, clone_p=0.2, base_p=0.8)  # the clone keeps missing this user's clicks
    assert gate.serve(SETTINGS.eta) == "base"
    assert gate.p_clone(SETTINGS.eta) < 0.05
    feed(gate, 40, clone_p=0.9, base_p=0.6)  # it learned: now it is the better one
    assert gate.serve(SETTINGS.eta) == "clone"


def test_the_gate_round_trips_through_bytes() -> None:
    gate = Gate(1.5, 2.25, 7)
    assert Gate.from_bytes(gate.to_bytes()) == gate
    assert Gate.from_bytes(b"") == Gate()


@pytest.mark.parametrize(("y", "p"), [(1, 0.0), (0, 1.0)])
def test_log_loss_is_finite_at_the_edges(y: int, p: float) -> None:
    assert 0 < log_loss(y, p) < 30


def test_a_format_1_gate_record_is_still_read() -> None:
    gate = Gate(1.5, 2.25, 7)
    assert Gate.from_bytes(gate.to_bytes()[:24]) == gate


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\0" * 10, "is 10 bytes"),
        (Gate(1.5, 2.25, 7).to_bytes()[:-1] + b"\x00", "checksum mismatch"),
        (Gate(-1.0, 2.25, 7).to_bytes(), "must be finite and >= 0"),
        (Gate(float("nan"), 2.25, 7).to_bytes()[:24], "must be finite and >= 0"),
    ],
)
def test_a_malformed_gate_record_says_what_is_wrong(blob: bytes, message: str) -> None:
    with pytest.raises(ModelFormatError, match=message):
        Gate.from_bytes(blob)
