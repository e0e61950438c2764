"""Choosing the clones' defaults on rolling folds of the *first* part of a log only.

A default tuned on the events it is reported on is not a result. Here the first ``first``
fraction of the log (by time) is all there is: it is cut into ``folds + 1`` equal slices, and
fold ``i`` trains a base on slices ``0..i`` and replays slice ``i + 1`` live, so every fold
predicts the future of what it trained on, as the real split does, and none sees the live part.

    python -m fedlearn.evaluate.tuning DIR --first 0.3 --folds 2

prints, per setting of the levers, each arm's AUC and gAUC averaged over the folds.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedlearn.evaluate.replay import (
    ArmResult,
    ReplayConfig,
    _make_arms,
    _score,
    fit_base,
    live_events,
    load_log,
)

ARMS = ("global", "clones-agg", "clones-gated")
# Each lever against the defaults; add a field's values to try it (a grid multiplies).
GRIDS = {
    "steps": {"shared_lr_scale": (1.0, 0.5, 0.25), "lr_half_life": (None, 25.0, 100.0)},
    "rounds": {"agg_every": (250, 1000, 4000)},
    "gate": {"gate_decay": (0.9, 0.95, 0.99, 0.999)},
    "blend": {"gate_blend": (False, True)},
    "start": {"learned_start": (False, True)},
    # The blended gate's regret: forgetting (decay < 1) against the Bayes mixture (decay 1,
    # whose regret to the better expert is at most ln 2 a user), and a prior toward the clone.
    "regret": {"gate_decay": (0.95, 0.99, 0.995, 1.0), "gate_prior": (0.0, 1.0, 2.0)},
    "prior": {"gate_prior": (2.0, 3.0, 4.0), "gate_eta": (1.0, 2.0)},
    # The margin over one global online model, which moves a film's row for everyone at once:
    # rounds that fold rows one user moved (the default) or not (2), more often, and slower
    # item rows in a clone.
    "delta": {"max_rows": (4096, 256, 128, 64)},
    # The service's rounds fold a film one user rated (min_row_users 1, users' own rows private
    # by the fold's rule) against the second pass's 2, which withheld it.
    "single": {"agg_min_row_users": (None, 2)},
    "margin": {
        "agg_min_row_users": (None, 2),
        "agg_every": (250, 1000),
        "shared_lr_scale": (1.0, 0.5),
    },
}


def _metrics(result: ArmResult) -> tuple[tuple[str, float], ...]:
    """What a row reports of an arm (the gate's regret and the delta's size where they apply)."""
    return (
        ("auc", result.auc),
        ("gauc", result.gauc),
        ("regret", result.gate_regret_mean),
        ("bytes", result.delta_bytes_mean),
    )


def fold_bounds(n_events: int, first: float, folds: int) -> list[tuple[int, int]]:
    """``(train_end, live_end)`` of each fold: expanding training window, next slice live."""
    end = int(n_events * first)
    cuts = np.linspace(0, end, folds + 2).astype(int)
    return [(int(cuts[i + 1]), int(cuts[i + 2])) for i in range(folds)]


def tune(
    folder: Path,
    *,
    first: float,
    folds: int,
    grid: dict[str, tuple],
    arms: tuple[str, ...] = ARMS,
) -> list[dict[str, object]]:
    """Every combination of ``grid`` (ReplayConfig fields) on every fold; mean scores."""
    log = load_log(folder)
    base_config = ReplayConfig(arms=arms, lr_multiples=(1.0,))
    bases = []
    for train_end, live_end in fold_bounds(len(log.events), first, folds):
        train = log.events[:train_end]
        base, _ = fit_base([(x, y) for _, x, y in train], base_config.train, base_config.l2_grid)
        bases.append((base, log.events[train_end:live_end]))
    rows = []
    names = list(grid)
    for values in itertools.product(*(grid[n] for n in names)):
        config = replace(base_config, **dict(zip(names, values, strict=True)))
        samples: dict[str, list[float]] = {}  # "<arm> <metric>": one value a fold
        for base, live in bases:
            late = np.zeros(len(live), dtype=bool)
            events = live_events(live, config.first_n)
            for name in config.arms:
                for arm in _make_arms(name, base, None, config):
                    result, _ = _score(arm, live, events, config, None, late)
                    for metric, value in _metrics(result):
                        if np.isfinite(value):
                            samples.setdefault(f"{result.arm} {metric}", []).append(value)
        row: dict[str, object] = dict(zip(names, values, strict=True))
        row.update({key: float(np.mean(v)) for key, v in samples.items()})
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--first", type=float, default=0.3)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--grid", choices=list(GRIDS), default="steps")
    parser.add_argument(
        "--arms", default=",".join(ARMS), help="comma-separated arms (a gate grid: clones-gated)"
    )
    args = parser.parse_args()
    arms = tuple(args.arms.split(","))
    for row in tune(
        args.folder, first=args.first, folds=args.folds, grid=GRIDS[args.grid], arms=arms
    ):
        print(
            "  ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            )
        )


if __name__ == "__main__":
    main()
