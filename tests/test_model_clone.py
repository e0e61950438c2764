"""What every clone and base must do, whichever way it was made: predicting never mutates,
training is deterministic under a seed, unseen features and cold users just work."""

from __future__ import annotations

import numpy as np
import pytest

from fedlearn.model import Base, Clone, Delta, TrainConfig, learn_many, train_base


def _samples(seed: int = 0, n: int = 600) -> list[tuple[dict[str, float], int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        user, item = int(rng.integers(20)), int(rng.integers(30))
        x = {f"user={user}": 1.0, f"item={item}": 1.0, f"genre=g{item % 4}": 1.0}
        likes = (user % 4) == (item % 4)  # strong per-user tastes
        out.append((x, int(rng.random() < (0.8 if likes else 0.2))))
    return out


CONFIG = TrainConfig(n_factors=4, epochs=3, batch_size=64, valid_fraction=0.2)


@pytest.fixture(scope="module")
def trained() -> Base:
    return train_base(_samples(), CONFIG).base


def _fresh() -> Base:
    return Base.fresh(["user=1", "item=1", "item=2", "genre=g1"], n_factors=4, init_seed=3)


@pytest.fixture(params=["trained", "fresh"])
def base(request: pytest.FixtureRequest, trained: Base) -> Base:
    return trained if request.param == "trained" else _fresh()


@pytest.fixture(params=[{}, {"l2": 0.5}, {"bias_lr": 0.4}], ids=["sgd", "l2", "bias_lr"])
def clone_args(request: pytest.FixtureRequest) -> dict[str, float]:
    return request.param


def _snapshot(clone: Clone) -> tuple[bytes, bytes]:
    return clone.base.to_bytes(), clone.delta.to_bytes()


def test_predict_never_mutates(base: Base, clone_args: dict[str, float]) -> None:
    clone = Clone(base, **clone_args)
    clone.learn_one({"user=1": 1.0, "item=1": 1.0}, 1)
    before = _snapshot(clone)
    samples = [
        {"user=1": 1.0, "item=1": 1.0},
        {"user=1": 1.0, "item=never-seen": 1.0, "hour": 0.3},
        {},
    ]
    first = clone.predict_proba_many(samples)
    assert clone.predict_proba_one(samples[1]) == pytest.approx(first[1], abs=1e-15)
    assert _snapshot(clone) == before
    np.testing.assert_array_equal(clone.predict_proba_many(samples), first)
    assert ((first > 0) & (first < 1)).all()


def test_base_arrays_cannot_be_written(base: Base) -> None:
    with pytest.raises(ValueError, match="read-only"):
        base.v[0, 0] = 1.0


def test_training_is_deterministic_under_a_seed() -> None:
    samples = _samples()
    one = train_base(samples, CONFIG).base.to_bytes()
    two = train_base(samples, CONFIG).base.to_bytes()
    other = train_base(samples, TrainConfig(**{**vars(CONFIG), "seed": 1})).base.to_bytes()
    assert one == two
    assert one != other


def test_online_learning_is_deterministic(base: Base, clone_args: dict[str, float]) -> None:
    events = [("u", x, y) for x, y in _samples(seed=5, n=50)]
    runs = []
    for _ in range(2):
        deltas: dict[str, Delta] = {}
        p = learn_many(
            base, deltas, events, 0.05, clone_args.get("l2", 0.0), clone_args.get("bias_lr")
        )
        runs.append((p, deltas["u"].to_bytes()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_unseen_features_start_from_the_same_latent_everywhere(base: Base) -> None:
    """A feature the base never saw has weight 0 and a latent fixed by its name and seed,
    the same in any copy of the base (so every trainer and the browser agree)."""
    copy = Base.from_bytes(base.to_bytes())
    w1, v1 = base.rows(["item=brand-new", "genre=Unheard"])
    _, v2 = copy.rows(["item=brand-new", "genre=Unheard"])
    np.testing.assert_array_equal(w1, [0.0, 0.0])
    np.testing.assert_array_equal(v1, v2)
    assert not np.array_equal(v1[0], v1[1])
    assert np.abs(v1).max() <= base.init_scale
    x = {"user=1": 1.0, "item=brand-new": 1.0}
    assert Clone(base).predict_proba_one(x) == Clone(copy).predict_proba_one(x)


def test_learning_an_unseen_feature_adds_it_to_the_delta_only(base: Base) -> None:
    clone = Clone(base, lr=0.2)
    before = base.to_bytes()
    x = {"user=1": 1.0, "item=brand-new": 1.0}
    p0 = clone.predict_proba_one(x)
    for _ in range(10):
        clone.learn_one(x, 1)
    assert "item=brand-new" in clone.delta.names
    assert "item=brand-new" not in base.index
    assert base.to_bytes() == before
    assert clone.predict_proba_one(x) > p0


def test_a_cold_user_predicts_like_the_base_and_then_learns(trained: Base) -> None:
    deltas: dict[str, Delta] = {}
    x = {"user=cold": 1.0, "item=3": 1.0, "genre=g3": 1.0}
    frozen = Clone(trained).predict_proba_one(x)
    predictions = learn_many(trained, deltas, [("cold", x, 1)] * 5, 0.1)
    assert predictions[0] == pytest.approx(frozen, abs=1e-12)
    assert "cold" in deltas and deltas["cold"].n_events == 5
    assert np.all(np.diff(predictions) > 0)  # it clicked every time: each step raises p
    assert learn_many(trained, deltas, [], 0.1).shape == (0,)


def test_clones_learn_each_users_taste(trained: Base) -> None:
    """Per-user clones on strong per-user tastes beat the frozen base on the next events."""
    later = _samples(seed=9, n=800)
    events = [(next(iter(x)), x, y) for x, y in later]
    deltas: dict[str, Delta] = {}
    learn_many(trained, deltas, events[:600], 0.1, bias_lr=0.2)
    test = events[600:]
    frozen = Clone(trained).predict_proba_many([x for _, x, _ in test])
    cloned = np.array([Clone(trained, deltas.get(u)).predict_proba_one(x) for u, x, _ in test])
    y = np.array([label for _, _, label in test])

    def log_loss(p: np.ndarray) -> float:
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    assert log_loss(cloned) < log_loss(frozen)


def test_bad_hyperparameters_are_refused(trained: Base) -> None:
    with pytest.raises(ValueError, match="lr and bias_lr must be positive"):
        Clone(trained, lr=0)
    with pytest.raises(ValueError, match="l2 must be zero or positive"):
        Clone(trained, l2=-1)
    with pytest.raises(ValueError, match="factors"):
        Clone(trained, Delta(trained.n_factors + 1))
