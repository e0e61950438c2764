"""A seeded synthetic click log whose ground truth is known.

Real logs cannot tell us whether a model found the users' tastes; this one can. Every user has
a taste vector over genres (returned in :class:`SyntheticTruth`), every item a few genres and a
bias, and a click happens with probability ``sigmoid(base + taste(t)·genres + bias + hour
effect + noise)``. With ``drift`` the tastes rotate over time, so an online per-user model has
something to follow that a frozen base cannot; with ``shift_at`` they jump at a known time
(the test bed of drift detection). With ``repeat`` an impression shows the user one
of their recent items again (after a click or a skip), and ``affinity_scale`` gives every
(user, item) pair a taste of its own that no shared feature explains: only a per-user item row
can learn it, and only because the item comes back, which is where a clone should pay.
Everything is drawn with numpy in bulk, so a million events take seconds;
:meth:`SyntheticLog.events` streams them without any file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from fedlearn.data.catalog import FeatureTable, Manifest, write_dataset
from fedlearn.data.events import Event
from fedlearn.data.validate import check_positive_ints

_CHUNK = 1 << 18  # events per vectorized block: bounds memory at any size
_DAY = 86_400.0


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """How to draw a log. Same config (seed included) -> the same log, bit for bit.

    ``counts="zipf"`` draws each user's number of events from a heavy (Pareto, shape ``tail``)
    distribution, keeping the total at ``n_users * events_per_user``; ``"fixed"`` gives every
    user exactly ``events_per_user``. ``drift`` is how far tastes turn over the whole time
    span, in quarter turns: 0 = fixed, 1 = each user ends up with an unrelated taste.
    ``shift_at`` (a fraction of the time span) is a sudden shift instead: from then on every
    user's taste is its unrelated one and the items' biases are drawn anew (what is popular
    changes too, which the shared base can learn back); None: no shift.
    """

    n_users: int = 1000
    n_items: int = 500
    n_genres: int = 8
    events_per_user: int = 50
    counts: Literal["zipf", "fixed"] = "zipf"
    tail: float = 2.0
    genres_per_item: int = 2
    popularity: float = 0.8
    taste_scale: float = 1.5
    item_bias_scale: float = 0.5
    hour_scale: float = 0.5
    noise_scale: float = 0.3
    base_logit: float = -0.5
    drift: float = 0.0
    # Tastes are the population's shared one plus the user's own (``taste_scale``).
    population_taste_scale: float = 0.0
    repeat: float = 0.0
    repeat_window: int = 5
    affinity_scale: float = 0.0
    shift_at: float | None = None
    start_ts: float = 1_600_000_000.0
    days: float = 90.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_ints(self, ("n_users", "n_items", "n_genres", "events_per_user",
                                   "genres_per_item", "repeat_window"))  # fmt: skip
        if self.genres_per_item > self.n_genres:
            raise ValueError(
                f"'genres_per_item' ({self.genres_per_item}) must be at most 'n_genres' "
                f"({self.n_genres})"
            )
        if self.shift_at is not None and not 0.0 < self.shift_at < 1.0:
            raise ValueError(f"'shift_at' must be in (0, 1) or None, got {self.shift_at!r}")
        if self.counts not in ("zipf", "fixed"):
            raise ValueError(f"'counts' must be 'zipf' or 'fixed', got {self.counts!r}")
        for name in ("tail", "days"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name!r} must be > 0, got {getattr(self, name)!r}")
        for name in ("popularity", "taste_scale", "item_bias_scale", "hour_scale", "noise_scale",
                     "drift", "population_taste_scale", "affinity_scale"):  # fmt: skip
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name!r} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.repeat < 1.0:
            raise ValueError(f"'repeat' must be in [0, 1), got {self.repeat!r}")

    @property
    def n_events(self) -> int:
        return self.n_users * self.events_per_user


@dataclass(frozen=True)
class SyntheticTruth:
    """What generated the clicks: enough to compute any event's true click probability."""

    tastes_start: np.ndarray  # (n_users, n_genres): taste at the start of the time span
    tastes_turn: np.ndarray  # (n_users, n_genres): same norm, orthogonal; where drift turns to
    item_genres: np.ndarray  # (n_items, n_genres): 0/1
    item_bias: np.ndarray  # (n_items,)
    genre_names: tuple[str, ...]
    population: np.ndarray | None = None  # (n_genres,): everyone's shared taste; never turns
    # The (user, item) affinities of the pairs in the log: sorted keys user * n_items + item.
    affinity_keys: np.ndarray | None = None
    affinity: np.ndarray | None = None
    item_bias_shifted: np.ndarray | None = None  # (n_items,): after ``shift_at``, if any

    def tastes_at(self, users: np.ndarray, angle: np.ndarray) -> np.ndarray:
        """Tastes of ``users`` after turning by ``angle`` radians (rows of a matrix)."""
        own = (
            np.cos(angle)[:, None] * self.tastes_start[users]
            + np.sin(angle)[:, None] * self.tastes_turn[users]
        )
        return own if self.population is None else own + self.population

    def affinity_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The affinity of each (user, item) pair of the log (0 without affinities)."""
        if self.affinity is None or self.affinity_keys is None:
            return np.zeros(len(users))
        n_items = len(self.item_bias)
        at = np.searchsorted(self.affinity_keys, users * n_items + items)
        return self.affinity[at]


@dataclass(frozen=True)
class SyntheticLog:
    """The drawn log, time-ordered, as numpy columns, plus the truth behind it."""

    config: SyntheticConfig
    user: np.ndarray  # int64 user index per event
    item: np.ndarray  # int64 item index per event
    ts: np.ndarray  # float64 seconds since the epoch, non-decreasing
    hour: np.ndarray  # int64 0..23 (UTC hour of ts), the event's context
    p: np.ndarray  # float64 true click probability of the event
    click: np.ndarray  # bool
    truth: SyntheticTruth

    def __len__(self) -> int:
        return len(self.user)

    @staticmethod
    def user_id(index: int) -> str:
        return f"u{index}"

    @staticmethod
    def item_id(index: int) -> str:
        return f"i{index}"

    def items(self) -> FeatureTable:
        """The item catalog: ``genre=<g>`` features, as written to items.jsonl."""
        names = self.truth.genre_names
        return {
            self.item_id(i): {f"genre={names[g]}": 1.0 for g in np.flatnonzero(row).tolist()}
            for i, row in enumerate(self.truth.item_genres)
        }

    def events(self, start: int = 0, stop: int | None = None) -> Iterator[Event]:
        """Events ``start..stop`` in time order, as :class:`Event` objects; no file involved."""
        stop = len(self) if stop is None else min(stop, len(self))
        for lo in range(start, stop, _CHUNK):
            hi = min(lo + _CHUNK, stop)
            columns = zip(
                range(lo, hi),
                self.user[lo:hi].tolist(),
                self.item[lo:hi].tolist(),
                self.click[lo:hi].tolist(),
                self.ts[lo:hi].tolist(),
                self.hour[lo:hi].tolist(),
                strict=True,
            )
            for index, user, item, click, ts, hour in columns:
                yield Event(
                    event_id=f"syn:{index}",
                    user=f"u{user}",
                    item=f"i{item}",
                    signal="click" if click else "skip",
                    ts=ts,
                    context={"hour": str(hour)},
                )


def generate(config: SyntheticConfig) -> SyntheticLog:
    """Draw a log. Each part has its own random stream, so e.g. changing ``drift`` keeps the
    same users, items, times and tastes and changes only the clicks."""
    # Spawned children depend on their index only, so the streams added later (repeats,
    # affinities, the population's taste) leave the logs of older configs bit for bit the same.
    (r_taste, r_items, r_counts, r_times, r_pick, r_noise, r_click, r_repeat, r_affinity) = [
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(9)
    ]
    truth = _truth(config, r_taste, r_items)
    counts = _counts(config, r_counts)
    user = np.repeat(np.arange(config.n_users), counts)
    ts = _times(config, counts, r_times)
    order = np.argsort(ts, kind="stable")
    user, ts = user[order], ts[order]
    rank_weight = 1.0 / np.arange(1, config.n_items + 1) ** config.popularity
    popularity = r_pick.permutation(rank_weight / rank_weight.sum())
    item = r_pick.choice(config.n_items, size=len(user), p=popularity)
    if config.repeat > 0:
        item = _repeat_recent(config, user, item, r_repeat)
    truth = _with_affinities(config, truth, user, item, r_affinity)
    hour = ((ts % _DAY) // 3600).astype(np.int64)
    p = np.empty(len(user))
    span = config.days * _DAY
    for lo in range(0, len(user), _CHUNK):
        hi = min(lo + _CHUNK, len(user))
        angle = config.drift * (math.pi / 2) * (ts[lo:hi] - config.start_ts) / span
        bias = truth.item_bias[item[lo:hi]]
        if truth.item_bias_shifted is not None:
            shifted = ts[lo:hi] >= config.start_ts + config.shift_at * span
            angle = np.where(shifted, math.pi / 2, angle)
            bias = np.where(shifted, truth.item_bias_shifted[item[lo:hi]], bias)
        tastes = truth.tastes_at(user[lo:hi], angle)
        logit = (
            config.base_logit
            + np.einsum("ij,ij->i", tastes, truth.item_genres[item[lo:hi]])
            + bias
            + truth.affinity_of(user[lo:hi], item[lo:hi])
            # Evenings click more: a known, learnable effect of the context feature.
            + config.hour_scale * np.cos(2 * math.pi * (hour[lo:hi] - 21) / 24)
            + r_noise.normal(0.0, config.noise_scale, hi - lo)
        )
        p[lo:hi] = 1.0 / (1.0 + np.exp(-logit))
    click = r_click.random(len(user)) < p
    return SyntheticLog(config, user, item, ts, hour, p, click, truth)


def drifting_tastes(
    rng: np.random.Generator, scale: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Users' tastes at the start, and where drift turns them: a second random direction
    made orthogonal to the first and given the same length, so a taste keeps its strength
    while it turns (``cos(a) start + sin(a) turn``)."""
    start = rng.normal(0.0, scale, shape)
    other = rng.normal(0.0, scale, shape)
    norms = np.einsum("ij,ij->i", start, start)
    safe = np.where(norms > 0, norms, 1.0)
    other -= (np.einsum("ij,ij->i", other, start) / safe)[:, None] * start
    length = np.sqrt(norms) / np.maximum(np.linalg.norm(other, axis=1), 1e-12)
    return start, other * length[:, None]


def _truth(
    config: SyntheticConfig, r_taste: np.random.Generator, r_items: np.random.Generator
) -> SyntheticTruth:
    n_u, n_g = config.n_users, config.n_genres
    start, turn = drifting_tastes(r_taste, config.taste_scale, (n_u, n_g))
    k = r_items.integers(1, config.genres_per_item + 1, config.n_items)
    ranks = np.argsort(r_items.random((config.n_items, n_g)), axis=1).argsort(axis=1)
    genres = (ranks < k[:, None]).astype(np.float64)
    bias = r_items.normal(0.0, config.item_bias_scale, config.n_items)
    names = tuple(f"g{g}" for g in range(n_g))
    # Drawn after everything else, so a log with a shift is the same log up to the shift.
    shifted = (
        None
        if config.shift_at is None
        else r_items.normal(0.0, config.item_bias_scale, config.n_items)
    )
    return SyntheticTruth(start, turn, genres, bias, names, item_bias_shifted=shifted)


def _repeat_recent(
    config: SyntheticConfig, user: np.ndarray, item: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """With probability ``repeat``, an impression shows again the item of one of the user's
    last ``repeat_window`` impressions (which may itself be a repeat)."""
    n = len(user)
    by_user = np.argsort(user, kind="stable")  # each user's events in time order
    sorted_user = user[by_user]
    starts = np.searchsorted(sorted_user, sorted_user)  # where each user's run begins
    position = np.arange(n) - starts  # events the user had before, at each sorted slot
    back = np.minimum(rng.integers(1, config.repeat_window + 1, n), position)
    repeats = (rng.random(n) < config.repeat) & (position > 0)
    source = np.arange(n)
    source[by_user[repeats]] = by_user[np.flatnonzero(repeats) - back[repeats]]
    # Follow chains of repeats to the impression that drew a fresh item (pointer jumping:
    # every pass halves the longest chain, and a source always lies earlier in time).
    while not np.array_equal(source[source], source):
        source = source[source]
    return item[source]


def _with_affinities(
    config: SyntheticConfig,
    truth: SyntheticTruth,
    user: np.ndarray,
    item: np.ndarray,
    rng: np.random.Generator,
) -> SyntheticTruth:
    """The truth, with the population's taste and an affinity for every (user, item) pair
    of the log (drawn in the order of their keys, so the same pairs get the same values)."""
    population = rng.normal(0.0, config.population_taste_scale, config.n_genres)
    if config.affinity_scale == 0:
        return replace(truth, population=population)
    keys = np.unique(user * config.n_items + item)
    values = rng.normal(0.0, config.affinity_scale, len(keys))
    return replace(truth, population=population, affinity_keys=keys, affinity=values)


def _counts(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    n, per = config.n_users, config.events_per_user
    if config.counts == "fixed":
        return np.full(n, per, dtype=np.int64)
    # Everyone gets one event, the rest is shared in proportion to Pareto weights: a long
    # tail of heavy users, an exact total, no user without events.
    weights = rng.pareto(config.tail, n) + 1.0
    return 1 + rng.multinomial(n * per - n, weights / weights.sum())


def _times(config: SyntheticConfig, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each user is active in a window of 5..30 % of the span starting anywhere in it, so
    users keep arriving all along (later users can profit from what earlier ones taught)."""
    n = len(counts)
    width = rng.uniform(0.05, 0.30, n)
    begin = rng.uniform(0.0, 1.0, n) * (1.0 - width)
    owner = np.repeat(np.arange(n), counts)
    frac = begin[owner] + width[owner] * rng.random(len(owner))
    return config.start_ts + frac * config.days * _DAY


def write_synthetic(
    out: str | Path, config: SyntheticConfig, *, progress: bool = False
) -> tuple[Manifest, SyntheticLog]:
    """Draw a log and write it as a dataset folder (the same layout as MovieLens)."""
    log = generate(config)
    events: Iterator[Event] = log.events()
    if progress:
        events = tqdm(events, total=len(log), desc="writing events", unit=" events", disable=None)
    manifest = write_dataset(
        out,
        events,
        items=log.items(),
        source=f"synthetic (seed {config.seed})",
        license="synthetic data, no restrictions",
        params={"generator": "fedlearn.data.synthetic", **asdict(config)},
    )
    return manifest, log
