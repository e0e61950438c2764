"""The serving gate picks whichever of clone and base predicted the user better, and recovers."""

from __future__ import annotations

import numpy as np
import pytest

from fedlearn.model import ModelFormatError
from fedlearn.model.gating import Gate, GateSettings, serve_then_update, served
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


@pytest.mark.parametrize(("loss_clone", "loss_base"), [(0.0, 0.0), (3.0, 1.0), (1.0, 2.5)])
def test_a_switch_weighs_one_expert_fully_and_a_blend_by_hedge(
    loss_clone: float, loss_base: float
) -> None:
    gate = Gate(loss_clone, loss_base, 5)
    switch, blend = GateSettings(blend=False), GateSettings(blend=True)
    assert switch.weight(gate) == (1.0 if gate.serve(switch.eta) == "clone" else 0.0)
    assert blend.weight(gate) == gate.p_clone(blend.eta)


def test_a_weight_of_one_serves_the_clone_exactly_and_zero_the_base() -> None:
    clone, base = np.array([0.123456789, 0.9]), np.array([0.5, 0.1])
    assert served(clone, base, 1.0).tolist() == clone.tolist()
    assert served(clone, base, 0.0).tolist() == base.tolist()
    assert served(0.8, 0.2, 0.25) == pytest.approx(0.35)


def test_each_event_is_served_by_the_gate_as_it_stood_before_it() -> None:
    settings = GateSettings(decay=0.9, eta=2.0, blend=True)
    users = ["a", "b", "a", "a"]
    labels = np.array([1.0, 0.0, 1.0, 1.0])
    clone, base = np.array([0.9, 0.2, 0.9, 0.9]), np.array([0.4, 0.6, 0.4, 0.4])
    gates: dict[str, Gate] = {"b": Gate(1.0, 5.0, 3)}
    out = serve_then_update(gates, users, labels, clone, base, settings)
    expected, replayed = [], {"b": Gate(1.0, 5.0, 3)}
    for i, user in enumerate(users):
        gate = replayed.setdefault(user, Gate())
        w = gate.p_clone(settings.eta)
        expected.append(w * clone[i] + (1 - w) * base[i])
        gate.update(log_loss(int(labels[i]), clone[i]), log_loss(int(labels[i]), base[i]), 0.9)
    assert out.tolist() == pytest.approx(expected, abs=1e-15)
    assert out[0] == pytest.approx(0.5 * 0.9 + 0.5 * 0.4)  # a new gate: no evidence, even
    assert out[2] > out[0]  # the clone predicted "a" better, so it weighs more afterwards
    assert gates == replayed


@pytest.mark.parametrize("prior", [0.0, 2.0, -1.0])
def test_an_undiscounted_blend_is_the_bayes_mixture_and_its_regret_is_bounded(
    prior: float,
) -> None:
    # With decay 1 and eta 1 the served log losses telescope to -ln(pi_c e^-Lc + pi_b e^-Lb),
    # so the regret to the clone is at most -ln pi_c and to the base at most -ln pi_b, for
    # any predictions (the replay's "gate regret" is this, per event, per user).
    rng = np.random.default_rng(3)
    settings = GateSettings(decay=1.0, eta=1.0, blend=True, prior=prior)
    y = (rng.random(300) < 0.5).astype(float)
    clone_p, base_p = rng.uniform(0.01, 0.99, 300), rng.uniform(0.01, 0.99, 300)
    served_p = serve_then_update({}, ["u"] * 300, y, clone_p, base_p, settings)
    total = sum(log_loss(int(t), p) for t, p in zip(y, served_p, strict=True))
    clone = sum(log_loss(int(t), p) for t, p in zip(y, clone_p, strict=True))
    base = sum(log_loss(int(t), p) for t, p in zip(y, base_p, strict=True))
    pi_clone = 1.0 / (1.0 + np.exp(-prior))
    mixture = -np.log(pi_clone * np.exp(-clone) + (1.0 - pi_clone) * np.exp(-base))
    assert total == pytest.approx(mixture, rel=1e-9)
    assert total <= clone - np.log(pi_clone) + 1e-9
    assert total <= base - np.log(1.0 - pi_clone) + 1e-9


def test_a_prior_is_a_new_users_first_weight_and_moves_only_the_log_odds() -> None:
    assert GateSettings(prior=2.0).weight(Gate()) == pytest.approx(1.0 / (1.0 + np.exp(-2.0)))
    gate = Gate(loss_clone=1.0, loss_base=0.5)  # the base ahead by half a nat
    assert GateSettings(blend=False, prior=1.0).weight(gate) == 1.0
    assert GateSettings(blend=False, prior=0.0).weight(gate) == 0.0


@pytest.mark.parametrize("blend", [True, False])
def test_the_compiled_gate_loop_gives_each_gates_own_bits(blend: bool) -> None:
    """Served weights and gates as ``Gate``'s methods give them event by event, to the bit,
    non-finite losses (a clone that went non-finite) counted as no evidence."""
    from fedlearn.model.metrics import log_losses

    rng = np.random.default_rng(5)
    settings = GateSettings(decay=0.95, eta=1.5, blend=blend)
    users = [f"u{i}" for i in rng.integers(0, 7, 400)]
    labels = rng.integers(0, 2, 400).astype(float)
    clone, base = rng.uniform(0.01, 0.99, 400), rng.uniform(0.01, 0.99, 400)
    clone[[3, 50]] = np.nan
    gates = {"u1": Gate(3.0, 1.0, 9), "u2": Gate(0.0, 40.0, 80)}
    replayed = {user: Gate(g.loss_clone, g.loss_base, g.events) for user, g in gates.items()}
    out = serve_then_update(gates, users, labels, clone, base, settings)
    clone_losses, base_losses = log_losses(labels, clone), log_losses(labels, base)
    expected = []
    for i, user in enumerate(users):
        gate = replayed.setdefault(user, Gate())
        expected.append(served(clone[i], base[i], settings.weight(gate)))
        gate.update(float(clone_losses[i]), float(base_losses[i]), settings.decay)
    assert out.tobytes() == np.array(expected).tobytes()
    assert gates == replayed
