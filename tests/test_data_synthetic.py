"""The synthetic generator: seeded, heavy-tailed, time-ordered, clicks that follow known tastes."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedlearn.cli import main
from fedlearn.data import Dataset
from fedlearn.data.synthetic import SyntheticConfig, SyntheticLog, generate, write_synthetic
from fedlearn.model.metrics import roc_auc

SMALL = SyntheticConfig(n_users=300, n_items=80, events_per_user=20, seed=7)


def _start_taste_score(log: SyntheticLog) -> np.ndarray:
    """What the clicks would follow if tastes never moved: start taste · genres + bias."""
    t = log.truth
    return (
        np.einsum("ij,ij->i", t.tastes_start[log.user], t.item_genres[log.item])
        + (t.item_bias[log.item])
    )


def test_same_seed_same_log_other_seed_other_log() -> None:
    a, b, c = (
        generate(SMALL),
        generate(SMALL),
        generate(SyntheticConfig(**{**vars(SMALL), "seed": 8})),
    )
    for name in ("user", "item", "ts", "hour", "p", "click"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(a.truth.tastes_start, b.truth.tastes_start)
    assert not np.array_equal(a.truth.tastes_start, c.truth.tastes_start)
    assert not np.array_equal(a.click, c.click)


def test_fixed_counts_give_every_user_exactly_n_events() -> None:
    log = generate(SyntheticConfig(n_users=50, n_items=10, events_per_user=7, counts="fixed"))
    assert np.array_equal(np.bincount(log.user, minlength=50), np.full(50, 7))


def test_zipf_counts_are_heavy_tailed_with_an_exact_total() -> None:
    log = generate(SyntheticConfig(n_users=2000, n_items=50, events_per_user=20, seed=1))
    counts = np.bincount(log.user, minlength=2000)
    assert counts.sum() == 2000 * 20 == len(log)
    assert counts.min() >= 1
    assert counts.max() > 8 * np.median(counts)  # a few heavy users, many light ones


def test_time_is_ordered_and_hour_comes_from_ts() -> None:
    log = generate(SMALL)
    assert np.all(np.diff(log.ts) >= 0)
    assert log.ts[0] >= SMALL.start_ts
    assert log.ts[-1] <= SMALL.start_ts + SMALL.days * 86_400
    assert np.array_equal(log.hour, (log.ts // 3600 % 24).astype(int))


def test_clicks_follow_the_known_tastes() -> None:
    log = generate(SyntheticConfig(n_users=1000, n_items=200, events_per_user=30, seed=3))
    assert 0.2 < log.click.mean() < 0.8
    # The true probability ranks clicks well, the taste score alone nearly as well.
    assert roc_auc(log.click, log.p) > 0.75
    assert roc_auc(log.click, _start_taste_score(log)) > 0.7
    # And they are not a coin: shuffled scores give about 0.5.
    shuffled = np.random.default_rng(0).permutation(log.p)
    assert abs(roc_auc(log.click, shuffled) - 0.5) < 0.03


def test_drift_turns_tastes_away_over_time() -> None:
    base = {"n_users": 2000, "n_items": 200, "events_per_user": 30, "seed": 5}
    still, drifting = (
        generate(SyntheticConfig(**base)),
        generate(SyntheticConfig(**base, drift=1.0)),
    )
    # Drift changes only the clicks: same users, items and times.
    assert np.array_equal(still.user, drifting.user)
    assert np.array_equal(still.ts, drifting.ts)
    fifth = len(still) // 5
    early, late = slice(0, fifth), slice(-fifth, None)

    def auc(log: SyntheticLog, part: slice) -> float:
        return roc_auc(log.click[part], _start_taste_score(log)[part])

    assert abs(auc(still, early) - auc(still, late)) < 0.05
    assert auc(drifting, early) - auc(drifting, late) > 0.1


def test_drift_target_is_orthogonal_with_the_same_strength() -> None:
    t = generate(SMALL).truth
    assert np.allclose(np.einsum("ij,ij->i", t.tastes_start, t.tastes_turn), 0.0, atol=1e-9)
    assert np.allclose(
        np.linalg.norm(t.tastes_start, axis=1), np.linalg.norm(t.tastes_turn, axis=1)
    )


def test_items_have_between_one_and_max_genres() -> None:
    log = generate(SyntheticConfig(n_items=300, n_genres=6, genres_per_item=3))
    per_item = log.truth.item_genres.sum(axis=1)
    assert per_item.min() == 1 and per_item.max() == 3
    catalog = log.items()
    assert len(catalog) == 300
    assert all(len(f) == n for f, n in zip(catalog.values(), per_item, strict=True))


def test_in_memory_events_match_the_written_folder(tmp_path: Path) -> None:
    manifest, log = write_synthetic(tmp_path / "syn", SMALL)
    ds = Dataset.load(tmp_path / "syn")
    assert list(ds.events()) == list(log.events())
    assert ds.items == log.items()
    assert manifest.counts["events"] == len(log) == 300 * 20
    assert manifest.counts["clicks"] == int(log.click.sum())
    assert manifest.params["seed"] == 7
    first = next(log.events())
    assert first.context == {"hour": str(log.hour[0])}
    assert (first.user, first.item) == (f"u{log.user[0]}", f"i{log.item[0]}")
    assert [e.event_id for e in log.events(10, 13)] == ["syn:10", "syn:11", "syn:12"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_users": 0}, "'n_users' must be a positive integer, got 0"),
        ({"genres_per_item": 9}, "'genres_per_item' (9) must be at most 'n_genres' (8)"),
        ({"counts": "pareto"}, "'counts' must be 'zipf' or 'fixed', got 'pareto'"),
        ({"drift": -1.0}, "'drift' must be >= 0, got -1.0"),
    ],
)
def test_bad_config_names_the_field(change: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        SyntheticConfig(**change)
    assert str(caught.value) == message


def test_a_million_events_are_drawn_in_bulk() -> None:
    log = generate(SyntheticConfig(n_users=10_000, n_items=2000, events_per_user=100, seed=2))
    assert len(log) == 1_000_000
    assert np.all(np.diff(log.ts) >= 0)


def test_cli_writes_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    args = ["datasets", "synthetic", "--out", str(out), "--users", "30", "--items", "12"]
    result = CliRunner().invoke(
        main, [*args, "--events-per-user", "5", "--seed", "4", "--drift", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert "150 events" in result.output
    assert Dataset.load(out).manifest.params["drift"] == 0.5
    result = CliRunner().invoke(main, [*args, "--genres", "1", "--drift", "-2"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# -- where a clone can show what it learns: repeats, own affinities, a shared taste ------------

REPEATS = SyntheticConfig(
    n_users=200, n_items=300, events_per_user=40, repeat=0.5, repeat_window=3, seed=4
)


def _shown_again(log: SyntheticLog, window: int) -> float:
    """Share of the users' non-first impressions whose item was among their last ``window``."""
    again = total = 0
    for u in range(log.config.n_users):
        items = log.item[log.user == u].tolist()
        for i in range(1, len(items)):
            total += 1
            again += items[i] in items[max(0, i - window) : i]
    return again / total


def test_repeat_shows_recent_items_again() -> None:
    repeated = generate(REPEATS)
    fresh = generate(replace(REPEATS, repeat=0.0))
    # Popular items come back by chance too (about 5 % here); repeats add about half.
    chance = _shown_again(fresh, 3)
    assert chance < 0.1
    assert _shown_again(repeated, 3) > chance + 0.4
    assert np.array_equal(repeated.user, fresh.user) and np.array_equal(repeated.ts, fresh.ts)


def test_affinities_are_per_pair_and_move_the_clicks() -> None:
    config = replace(REPEATS, affinity_scale=2.0)
    log = generate(config)
    without = generate(replace(config, affinity_scale=0.0))
    assert np.array_equal(log.item, without.item), "affinities change clicks, not impressions"
    affinity = log.truth.affinity_of(log.user, log.item)
    assert affinity.std() == pytest.approx(2.0, rel=0.15)
    # The same (user, item) pair always has the same affinity; the clicks follow it.
    pair = log.user * config.n_items + log.item
    first = {}
    for key, value in zip(pair.tolist(), affinity.tolist(), strict=True):
        assert first.setdefault(key, value) == value
    assert roc_auc(log.click, affinity) > 0.7
    assert roc_auc(without.click, affinity) == pytest.approx(0.5, abs=0.05)


def test_tastes_are_the_population_s_plus_the_user_s_own() -> None:
    log = generate(replace(SMALL, population_taste_scale=1.0))
    t = log.truth
    assert t.population is not None and np.abs(t.population).max() > 0
    users = np.arange(5)
    own = t.tastes_start[users]
    assert np.allclose(t.tastes_at(users, np.zeros(5)), own + t.population)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("repeat", 1.0, "'repeat' must be in [0, 1)"), ("affinity_scale", -1.0, ">= 0"),
     ("repeat_window", 0, "positive integer")],
)  # fmt: skip
def test_bad_repeat_settings_are_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SyntheticConfig(**{field: value})


def test_cli_draws_repeats_and_affinities(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    args = ["datasets", "synthetic", "--out", str(out), "--users", "30", "--items", "12"]
    extra = ["--repeat", "0.4", "--affinity", "1.5", "--population-taste", "0.5"]
    result = CliRunner().invoke(main, [*args, *extra])
    assert result.exit_code == 0, result.output
    params = Dataset.load(out).manifest.params
    assert (params["repeat"], params["affinity_scale"], params["population_taste_scale"]) == (
        0.4,
        1.5,
        0.5,
    )
    result = CliRunner().invoke(main, [*args, "--repeat", "1"])
    assert result.exit_code == 2 and "--repeat" in result.output
