"""The synthetic generator: seeded, heavy-tailed, time-ordered, clicks that follow known tastes."""

from __future__ import annotations

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
