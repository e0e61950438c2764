"""Shared test vectors: the Python FM's answers that the JavaScript client must reproduce.

``fedlearn vectors`` writes them to ``client_js/test/vectors.json``; the Python tests and the
Node tests both read that one file, so the two implementations are held to the same numbers.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from fedlearn.model.base import Base
from fedlearn.model.clone import Clone
from fedlearn.model.delta import DEFAULT_MAX_ROWS, Delta
from fedlearn.model.features import MAX_FEATURE_VALUE, event_features
from fedlearn.model.fm import MAX_DELTA, MAX_STEP
from fedlearn.model.gating import Gate, GateSettings, served
from fedlearn.model.metrics import log_loss_one

# Contexts both sides must refuse: keys that would make the model's own features, and a
# number beyond the feature bound.
REFUSED_CONTEXTS = [{"user": "victim"}, {"item=42": 1.0}, {"score": 1e6}]
# Clone weights a gate sends: the switch's two (base, clone) and two mixtures.
SERVED_WEIGHTS = (0.0, 0.25, 0.7, 1.0)


def _random_base(rng: np.random.Generator, n_factors: int, version: str) -> Base:
    names = [f"item={i}" for i in range(12)] + [f"genre={g}" for g in ("Drama", "Comedy", "Sci-Fi")]
    names += ["user=alice", "hour=21", "score"]
    fresh = Base.fresh(names, n_factors, init_seed=7, init_scale=0.1)
    return Base(
        names,
        float(rng.normal(0, 0.3)),
        rng.normal(0, 0.2, len(names)),
        fresh.v + rng.normal(0, 0.05, fresh.v.shape),
        version=version,
        init_seed=7,
        init_scale=0.1,
    )


def _sample(rng: np.random.Generator, user: str) -> dict[str, float]:
    item = str(int(rng.integers(0, 16)))  # items 12..15 are unknown to the base
    genres = rng.choice(["Drama", "Comedy", "Sci-Fi", "Noir"], size=int(rng.integers(0, 3)))
    context: dict[str, object] = {"hour": str(int(rng.integers(20, 23)))}
    if rng.random() < 0.5:
        context["score"] = round(float(rng.uniform(-1, 1)), 3)
    if rng.random() < 0.3:
        context["mobile"] = bool(rng.random() < 0.5)
    item_features = {f"genre={g}": 1.0 for g in genres}
    return event_features(user, item, context, item_features)


def _loud_sample(rng: np.random.Generator, user: str) -> dict[str, float]:
    """Values at the feature bound: steps this large are clipped and the delta hits its box."""
    context = {"score": float(rng.choice([-1.0, 1.0])) * MAX_FEATURE_VALUE, "hour": "21"}
    return event_features(user, str(int(rng.integers(0, 3))), context, {"genre=Noir": 1.0})


def _novel_sample(rng: np.random.Generator, user: str, step: int) -> dict[str, float]:
    """A new context string with every event: the delta reaches its row cap and evicts."""
    return event_features(user, str(int(rng.integers(0, 16))), {"q": f"s{step}"})


def _case(
    rng: np.random.Generator,
    base: Base,
    user: str,
    hyper: dict[str, Any],
    sample: Any,
    n_updates: int,
    near_the_box: bool = False,
) -> dict[str, Any]:
    """One case: a start delta, a score, ``n_updates`` test-then-train steps, the delta after.

    ``near_the_box`` starts every row just inside the delta's bound, so steps push against it.
    """
    clone = Clone(base, Delta(base.n_factors, dtype=np.float64), **hyper)
    for step in range(int(rng.integers(0, 5))):  # start from a non-empty delta
        clone.learn_one(sample(rng, user, step), int(rng.random() < 0.5))
    clone.delta.n_events = 0
    if near_the_box:
        signs = np.where(rng.random(clone.delta.v.shape) < 0.5, -1.0, 1.0)
        clone.delta.w[:] = MAX_DELTA - 0.25  # views of the rows in use, not the spare capacity
        clone.delta.v[:] = signs * (MAX_DELTA - 0.25)
    features = sample(rng, user, -1)
    clone_p, base_p = clone.predict_proba_one(features), Clone(base).predict_proba_one(features)
    record: dict[str, Any] = {
        "base": base.version,
        "user": user,
        **hyper,
        "delta": clone.delta.to_json(),
        "features": features,
        "expected_score": clone_p,
        # What a gate with each clone weight serves (fedlearn.model.gating.served).
        "served": [
            {"clone_weight": w, "expected_served_score": float(served(clone_p, base_p, w))}
            for w in SERVED_WEIGHTS
        ],
        "updates": [],
    }
    for step in range(n_updates):
        x, y = sample(rng, user, step + 5), int(rng.random() < 0.4)
        record["updates"].append(
            {"features": x, "y": y, "expected_prediction": clone.learn_one(x, y)}
        )
    record["expected_delta_after"] = clone.delta.to_json()
    return record


def _gate_case(rng: np.random.Generator, blend: bool, n_steps: int = 12) -> dict[str, Any]:
    """A gate's start, events' predictions of both models and labels, the weight after each
    update (``Gate.update``, ``GateSettings.weight``); the edges 0 and 1 are clipped."""
    settings = GateSettings(decay=0.9, eta=1.5, blend=blend)
    gate = Gate(round(float(rng.uniform(0, 2)), 6), round(float(rng.uniform(0, 2)), 6))
    start = {"loss_clone": gate.loss_clone, "loss_base": gate.loss_base,
             "decay": settings.decay, "eta": settings.eta, "blend": blend}  # fmt: skip
    steps = []
    for step in range(n_steps):
        clone_p, base_p = (0.0, 1.0) if step == 3 else rng.uniform(0.01, 0.99, 2).tolist()
        y = int(rng.random() < 0.5)
        gate.update(log_loss_one(y, clone_p), log_loss_one(y, base_p), settings.decay)
        steps.append({"clone_p": clone_p, "base_p": base_p, "y": y,
                      "expected_weight": settings.weight(gate)})  # fmt: skip
    return {"gate": start, "updates": steps}


def make_vectors(seed: int = 0, n_cases: int = 6, n_updates: int = 40) -> dict[str, Any]:
    """Bases (FLFM, base64) and cases: a score, a sequence of updates, the delta after them.

    The last two cases exercise the bounds: values at the feature bound with a large step (the
    step clip and the delta's box), and a small row cap with a new feature every event (LRU
    eviction). ``refused_contexts`` lists contexts that both sides must refuse.
    """
    rng = np.random.default_rng(seed)
    bases = {name: _random_base(rng, k, name) for name, k in (("b4", 4), ("b10", 10))}
    cases = []
    plain = lambda r, user, _step: _sample(r, user)  # noqa: E731
    for case in range(n_cases):
        base = bases["b4" if case % 2 == 0 else "b10"]
        user = "alice" if case < 2 else f"u{case}"
        lr, l2 = float(rng.choice([0.05, 0.2])), float(rng.choice([0.0, 0.01]))
        bias_lr = float(rng.choice([lr, 0.3]))
        hyper = {"lr": lr, "l2": l2, "bias_lr": bias_lr, "max_rows": DEFAULT_MAX_ROWS}
        cases.append(_case(rng, base, user, hyper, plain, n_updates))
    loud = lambda r, user, _step: _loud_sample(r, user)  # noqa: E731
    hyper = {"lr": 2.0, "l2": 0.01, "bias_lr": 2.0, "max_rows": DEFAULT_MAX_ROWS}
    cases.append(_case(rng, bases["b4"], "loud", hyper, loud, n_updates, near_the_box=True))
    hyper = {"lr": 0.2, "l2": 0.0, "bias_lr": 0.2, "max_rows": 6}
    cases.append(_case(rng, bases["b10"], "novel", hyper, _novel_sample, n_updates))
    return {
        "about": "Generated by `fedlearn vectors`; do not edit by hand.",
        "tolerance": 1e-6,
        "bases": {name: base64.b64encode(b.to_bytes()).decode() for name, b in bases.items()},
        "cases": cases,
        "refused_contexts": REFUSED_CONTEXTS,
        # Its own generator: adding these left the cases above as they were.
        "gates": [_gate_case(np.random.default_rng(seed + 1), b) for b in (True, False, True)],
        "bounds": {
            "max_feature_value": MAX_FEATURE_VALUE,
            "max_step": MAX_STEP,
            "max_delta": MAX_DELTA,
            "default_max_rows": DEFAULT_MAX_ROWS,
        },
    }
