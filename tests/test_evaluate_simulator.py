"""The closed-loop simulator: seeded and deterministic, new items arrive, tastes drift; a
policy runs through the service's model code, and off-policy evaluation of the logging
policy on its own log reweights by exactly 1."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedlearn.data.simulator import World, WorldConfig
from fedlearn.evaluate.candidate import CandidateModel, service_settings
from fedlearn.evaluate.closedloop import run_policy, warmup_samples
from fedlearn.evaluate.offpolicy import evaluate_policies
from fedlearn.model import TrainConfig, train_base
from fedlearn.model.policy import Policy

SMALL = WorldConfig(n_users=60, catalog_size=30, candidates=6, sessions_per_step=40, steps=6)
LOGGING = Policy("softmax", temperature=0.1)


@pytest.fixture(scope="module")
def world_and_base():
    world = World(SMALL)
    base = train_base(warmup_samples(world, 2000), TrainConfig(epochs=2)).base
    return world, base


def _run(world, base, policy, seed=0, record=False):
    return run_policy(world, CandidateModel(base, service_settings(base)), policy, seed=seed,
                      record=record)  # fmt: skip


def test_the_world_is_seeded_and_deterministic() -> None:
    a, b = World(SMALL), World(SMALL)
    other = World(dataclasses.replace(SMALL, seed=1))
    for t in (0, 5):
        sa, sb, so = a.step(t), b.step(t), other.step(t)
        for name in ("users", "offers", "uniforms"):
            assert np.array_equal(getattr(sa, name), getattr(sb, name)), name
        assert not np.array_equal(sa.offers, so.offers)
    assert np.array_equal(a.item_bias, b.item_bias)
    assert not np.array_equal(a.item_bias, other.item_bias)


def test_new_items_arrive_and_tastes_drift() -> None:
    world = World(SMALL)
    assert world.live_items(0)[-1] < world.live_items(5)[-1]
    assert set(world.step(5).offers.ravel()) <= set(world.live_items(5))
    users, items = np.arange(10), np.full(10, 3)
    assert not np.allclose(world.click_probability(users, items, 0),
                           world.click_probability(users, items, 5))  # fmt: skip
    with pytest.raises(ValueError, match=r"step must be in \[0, 6\), got 6"):
        world.step(6)
    with pytest.raises(ValueError, match="'candidates' \\(40\\) must be at most 'catalog_size'"):
        WorldConfig(candidates=40, catalog_size=30)


def test_a_policy_run_is_deterministic_under_its_seed(world_and_base) -> None:
    world, base = world_and_base
    one, two = _run(world, base, LOGGING, seed=3), _run(world, base, LOGGING, seed=3)
    assert np.array_equal(one.clicks, two.clicks)
    assert np.array_equal(one.expected, two.expected)
    assert not np.array_equal(one.expected, _run(world, base, LOGGING, seed=4).expected)
    assert 0 < one.click_rate() < 1
    assert one.cumulative_rate().shape == (SMALL.steps,)


def test_propensities_are_those_the_policy_gave(world_and_base) -> None:
    world, base = world_and_base
    greedy = _run(world, base, Policy.greedy(), record=True)
    assert {d.propensity for d in greedy.decisions} == {1.0}
    logged = _run(world, base, LOGGING, record=True)
    props = np.array([d.propensity for d in logged.decisions])
    assert ((props > 0) & (props <= 1)).all() and (props < 1).any()


def test_the_logging_policy_evaluated_on_its_own_log_weighs_every_decision_one(
    world_and_base,
) -> None:
    """The candidate = the logging configuration: its model re-walks the log to the same
    states, so its probabilities equal the logged propensities and SNIPS is the click rate."""
    world, base = world_and_base
    log = _run(world, base, LOGGING, record=True)
    model = CandidateModel(base, service_settings(base))
    (own, greedy) = evaluate_policies(
        log.decisions, model, [LOGGING, Policy.greedy()], block=SMALL.sessions_per_step
    )
    assert own.estimates["ips"].ess == pytest.approx(len(log.decisions))
    assert own.estimates["snips"].value == pytest.approx(log.click_rate())
    assert own.truth == pytest.approx(log.expected.sum() / len(log.decisions), rel=0.2)
    assert greedy.estimates["snips"].low <= greedy.estimates["snips"].high
