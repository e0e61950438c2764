"""The clone's SGD step is River's ``FMClassifier.learn_one``, and the batched update is the
sequential one.

River parity: a River FM that starts from our base's exact parameters (weights, latents, and
the deterministic latents of features the base never saw), with ``SGD(lr)`` for weights and
latents, ``intercept_lr = bias_lr`` and no L2, must predict and learn what our clone does,
to 1e-6, over a few hundred steps. ``learn_many`` over interleaved users must equal each
user's events applied one by one with ``Clone.learn_one``.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedlearn.model import Base, Clone, Delta, TrainConfig, learn_many, train_base
from fedlearn.model.batch import learn_many_shadow

river = pytest.importorskip("river")
from river import facto, optim  # noqa: E402

K = 4


def _features(rng: np.random.Generator, user: str, n_items: int = 40) -> dict[str, float]:
    item = int(rng.integers(n_items))
    x = {f"user={user}": 1.0, f"item=i{item}": 1.0, f"genre=g{item % 5}": 1.0}
    if rng.random() < 0.5:
        x["hour"] = float(rng.random())  # a numeric feature, not only one-hot
    return x


@pytest.fixture(scope="module")
def base() -> Base:
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(400):
        x = _features(rng, f"u{rng.integers(10)}", n_items=30)
        samples.append((x, int(rng.random() < 0.4 + 0.2 * ("genre=g1" in x))))
    config = TrainConfig(n_factors=K, epochs=2, batch_size=32, valid_fraction=0.0)
    return train_base(samples, config).base


def _stream(seed: int, users: list[str], n: int) -> list[tuple[str, dict[str, float], int]]:
    # Items up to 40 while the base saw 30, users u10+ are new: unseen rows on both sides.
    rng = np.random.default_rng(seed)
    events = []
    for _ in range(n):
        user = users[int(rng.integers(len(users)))]
        events.append((user, _features(rng, user), int(rng.random() < 0.5)))
    return events


def _river_from(base: Base, names: list[str], lr: float, bias_lr: float) -> facto.FMClassifier:
    model = facto.FMClassifier(
        n_factors=base.n_factors,
        weight_optimizer=optim.SGD(lr),
        latent_optimizer=optim.SGD(lr),
        intercept=base.w0,
        intercept_lr=bias_lr,
        seed=0,
    )
    w, v = base.rows(names)
    for name, wj, vj in zip(names, w, v, strict=True):
        model.weights[name] = float(wj)
        model.latents[name] = vj.copy()
    return model


@pytest.mark.parametrize(("lr", "bias_lr"), [(0.05, 0.05), (0.1, 0.4)])
def test_clone_learns_like_river(base: Base, lr: float, bias_lr: float) -> None:
    events = _stream(2, ["u3", "u12"], 300)
    names = sorted({name for _, x, _ in events for name in x})
    assert any(name not in base.index for name in names)  # unseen features are covered
    model = _river_from(base, names, lr, bias_lr)
    clone = Clone(base, Delta(base.n_factors, dtype=np.float64), lr=lr, bias_lr=bias_lr)

    ours, theirs = [], []
    for _, x, y in events:
        theirs.append(model.predict_proba_one(x)[True])
        model.learn_one(x, bool(y))
        ours.append(clone.learn_one(x, y))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)

    w, v = base.rows(names)
    dw, dv = clone.delta.lookup(names)
    np.testing.assert_allclose(w + dw, [model.weights[n] for n in names], atol=1e-6)
    np.testing.assert_allclose(v + dv, [model.latents[n] for n in names], atol=1e-6)
    np.testing.assert_allclose(base.w0 + clone.delta.w0, model.intercept, atol=1e-6)
    # The learning actually moved the parameters, so the comparison above says something.
    assert np.abs(dv).max() > 1e-3


@pytest.mark.parametrize(("dtype", "atol"), [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_learn_many_equals_learn_one_per_user(base: Base, dtype: type, atol: float) -> None:
    """Exact in float64; float32 deltas round after every event one by one, but only at the
    end of a batch in ``learn_many``, so there they agree to float32 precision."""
    users = [f"u{i}" for i in range(14)]
    events = _stream(3, users, 600)
    batched = {u: Delta(base.n_factors, dtype=dtype) for u in users}
    predictions = np.concatenate(
        [
            learn_many(base, batched, events[start : start + 128], 0.1, l2=0.3, bias_lr=0.2)
            for start in range(0, len(events), 128)
        ]
    )
    clones = {
        u: Clone(base, Delta(base.n_factors, dtype=dtype), lr=0.1, l2=0.3, bias_lr=0.2)
        for u in users
    }
    one_by_one = [clones[u].learn_one(x, y) for u, x, y in events]

    np.testing.assert_allclose(predictions, one_by_one, rtol=0, atol=atol)
    assert set(batched) == set(users)
    for user, delta in batched.items():
        single = clones[user].delta
        assert delta.names == single.names
        assert delta.n_events == single.n_events == sum(u == user for u, _, _ in events)
        np.testing.assert_allclose(delta.w, single.w, rtol=0, atol=atol)
        np.testing.assert_allclose(delta.v, single.v, rtol=0, atol=atol)
        assert delta.w0 == pytest.approx(single.w0, abs=atol)


def test_learn_many_applies_each_users_events_in_input_order(base: Base) -> None:
    """Reordering one user's events changes that user's result and nobody else's."""
    events = _stream(4, ["u1", "u2"], 60)
    swapped = list(events)
    first, second = [i for i, (u, _, _) in enumerate(events) if u == "u1"][:2]
    swapped[first], swapped[second] = swapped[second], swapped[first]
    a: dict[str, Delta] = {}
    b: dict[str, Delta] = {}
    learn_many(base, a, events, 0.1)
    learn_many(base, b, swapped, 0.1)
    np.testing.assert_array_equal(a["u2"].v, b["u2"].v)
    assert not np.array_equal(a["u1"].v, b["u1"].v)


def test_l2_pulls_the_delta_toward_the_base(base: Base) -> None:
    events = _stream(5, ["u1"], 200)
    free: dict[str, Delta] = {}
    pulled: dict[str, Delta] = {}
    learn_many(base, free, events, 0.1, l2=0.0)
    learn_many(base, pulled, events, 0.1, l2=1.0)
    assert np.abs(pulled["u1"].v).sum() < np.abs(free["u1"].v).sum()
    assert abs(pulled["u1"].w0) < abs(free["u1"].w0)


@pytest.mark.parametrize(("lr", "l2", "scale"), [(0.1, 0.3, 1.0), (2.0, 0.0, 9.0)])
def test_compiled_update_equals_numpy_reference(
    base: Base, lr: float, l2: float, scale: float
) -> None:
    """numba's loop (``kernel.py``, in input order) against the numpy reference (steps across
    users): predictions, shadow predictions and deltas to 1e-9. In the second case the steps
    (``lr g x`` up to 18) are far beyond ``fm.MAX_STEP``, so the clipping is compared too."""
    users = [f"u{i}" for i in range(14)]
    events = [(u, {n: v * scale for n, v in x.items()}, y) for u, x, y in _stream(4, users, 700)]
    results = {}
    for engine in ("compiled", "numpy"):
        deltas = {u: Delta(base.n_factors, dtype=np.float64) for u in users}
        outputs = [
            learn_many_shadow(
                base, deltas, events[start : start + 256], lr, l2, 0.3, max_rows=8, engine=engine
            )
            for start in range(0, len(events), 256)
        ]
        results[engine] = (outputs, deltas)
    (compiled, c_deltas), (reference, r_deltas) = results["compiled"], results["numpy"]
    for (p, base_p), (p_ref, base_p_ref) in zip(compiled, reference, strict=True):
        np.testing.assert_allclose(p, p_ref, rtol=0, atol=1e-9)
        np.testing.assert_allclose(base_p, base_p_ref, rtol=0, atol=1e-9)
    for user in users:
        assert c_deltas[user].names == r_deltas[user].names
        np.testing.assert_allclose(c_deltas[user].w, r_deltas[user].w, rtol=0, atol=1e-9)
        np.testing.assert_allclose(c_deltas[user].v, r_deltas[user].v, rtol=0, atol=1e-9)
        assert c_deltas[user].w0 == pytest.approx(r_deltas[user].w0, abs=1e-9)


def test_learn_many_refuses_an_unknown_engine(base: Base) -> None:
    with pytest.raises(ValueError, match="engine must be one of"):
        learn_many(base, {}, [("u1", {"item=i1": 1.0}, 1)], 0.1, engine="fortran")
