"""A closed-loop world: users with known, drifting tastes, new items arriving, clicks drawn
from the tastes given what was shown.

The synthetic generator (``synthetic.py``) draws a whole log up front, so what is shown never
depends on a model. Here the world only answers questions, step by step: who comes, which
items are on offer, and whether the user clicks the one a policy showed. The policy and the
model live outside (``fedlearn.evaluate.closedloop``), so the world knows nothing of them.

Step ``t`` brings ``sessions_per_step`` sessions; each offers ``candidates`` items drawn from
the live catalog, the ``catalog_size`` newest items (``new_items_per_step`` arrive every step,
the oldest leave). A user's click probability on an item is
``sigmoid(base_logit + taste(t) . genres(item) + bias(item))``: tastes turn by ``drift``
quarter turns over ``steps`` (the synthetic generator's rotation), and an item's bias is its
own, not explained by its genres, so a model learns it only by showing the item.

Every draw comes from a stream keyed by (seed, step), so two policies run on one world meet
the same users, the same offers and the same uniform numbers behind the clicks (common random
numbers): their difference is the policies', not the dice's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedlearn.data.synthetic import drifting_tastes
from fedlearn.data.validate import check_positive_ints

_SESSIONS, _CLICKS = 0, 1  # the two streams of a step


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """The world's parameters; the same config (seed included) gives the same world."""

    n_users: int = 400
    n_genres: int = 8
    genres_per_item: int = 2
    # Defaults: a catalog that turns over every 20 steps and items whose own appeal (bias)
    # outweighs what their genres say: the world where showing an unproven item can pay.
    catalog_size: int = 40
    new_items_per_step: int = 2
    candidates: int = 10
    sessions_per_step: int = 200
    steps: int = 100
    taste_scale: float = 0.5
    item_bias_scale: float = 1.5
    base_logit: float = -1.5
    drift: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_ints(self, ("n_users", "n_genres", "genres_per_item", "catalog_size",
                                   "candidates", "sessions_per_step", "steps"))  # fmt: skip
        if self.new_items_per_step < 0:
            raise ValueError(f"'new_items_per_step' must be >= 0, got {self.new_items_per_step}")
        if self.genres_per_item > self.n_genres:
            raise ValueError(
                f"'genres_per_item' ({self.genres_per_item}) must be at most 'n_genres' "
                f"({self.n_genres})"
            )
        if self.candidates > self.catalog_size:
            raise ValueError(
                f"'candidates' ({self.candidates}) must be at most 'catalog_size' "
                f"({self.catalog_size})"
            )
        for name in ("taste_scale", "item_bias_scale", "drift"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name!r} must be >= 0, got {getattr(self, name)!r}")

    @property
    def n_items(self) -> int:
        """Items that exist by the end of the horizon."""
        return self.catalog_size + self.new_items_per_step * self.steps


@dataclass(frozen=True)
class Step:
    """One step's sessions: users ``(n,)``, offered items ``(n, candidates)``, and the
    uniform numbers a click is drawn from (``click = uniform < p``), one per offered item."""

    step: int
    users: np.ndarray
    offers: np.ndarray
    uniforms: np.ndarray


class World:
    """The truth behind the clicks; see the module docstring."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        r_taste, r_items = (
            np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(2)
        )
        self.tastes_start, self.tastes_turn = drifting_tastes(
            r_taste, config.taste_scale, (config.n_users, config.n_genres)
        )
        n_i = config.n_items
        k = r_items.integers(1, config.genres_per_item + 1, n_i)
        ranks = np.argsort(r_items.random((n_i, config.n_genres)), axis=1).argsort(axis=1)
        self.item_genres = (ranks < k[:, None]).astype(np.float64)
        self.item_bias = r_items.normal(0.0, config.item_bias_scale, n_i)

    def _rng(self, step: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, step, stream])

    def live_items(self, step: int) -> np.ndarray:
        """The catalog at ``step``: the ``catalog_size`` newest items."""
        newest = self.config.catalog_size + self.config.new_items_per_step * step
        return np.arange(newest - self.config.catalog_size, newest)

    def step(self, step: int) -> Step:
        """Who comes at ``step`` and what each session is offered."""
        c = self.config
        if not 0 <= step < c.steps:
            raise ValueError(f"step must be in [0, {c.steps}), got {step}")
        rng = self._rng(step, _SESSIONS)
        users = rng.integers(0, c.n_users, c.sessions_per_step)
        live = self.live_items(step)
        picks = np.argsort(rng.random((c.sessions_per_step, len(live))), axis=1)
        offers = live[picks[:, : c.candidates]]
        uniforms = self._rng(step, _CLICKS).random(offers.shape)
        return Step(step, users, offers, uniforms)

    def click_probability(self, users: np.ndarray, items: np.ndarray, step: int) -> np.ndarray:
        """True click probabilities of ``items`` (any shape whose first axis is ``users``')."""
        angle = self.config.drift * (math.pi / 2) * step / self.config.steps
        own, turn = self.tastes_start[users], self.tastes_turn[users]
        tastes = math.cos(angle) * own + math.sin(angle) * turn
        items = np.asarray(items)
        t = tastes.reshape(tastes.shape[:1] + (1,) * (items.ndim - 1) + tastes.shape[1:])
        logit = (
            self.config.base_logit
            + np.sum(t * self.item_genres[items], axis=-1)
            + self.item_bias[items]
        )
        return 1.0 / (1.0 + np.exp(-logit))

    def item_features(self, item: int) -> dict[str, float]:
        """The catalog's features of ``item`` (its genres), as the service's catalog holds them."""
        return {f"genre=g{g}": 1.0 for g in np.flatnonzero(self.item_genres[item]).tolist()}

    @staticmethod
    def user_id(index: int) -> str:
        return f"u{index}"

    @staticmethod
    def item_id(index: int) -> str:
        return f"i{index}"
