"""Delta bytes per user with and without the rebase after each round, against a River clone.

Replays the live half of ml-latest-small (synthetic if absent) through the replay's
aggregated arm (``AggregatedClonesArm``: the service's fold with its default config, a round
every ``--agg-every`` events), once as shipped (each contributor's delta rebased on the new
base, ``aggregate.rebase``) and once with the rebase left out (the behaviour before it).
Prints mean / p50 / p99 of ``len(delta.to_bytes())`` per user for both, and River's per-user
clone size (``len(pickle.dumps(deep copy))``, from ``bench_update``) with the ratios.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_update import (
    BIAS_LR,
    L2,
    LR,
    MOVIELENS,
    N_FACTORS,
    _bytes,
    movielens_stream,
    river,
    synthetic_stream,
)

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.fold import fold_pairs
from fedlearn.evaluate.arms import AggregatedClonesArm, LabelledEvent
from fedlearn.model import Delta, TrainConfig, train_base
from fedlearn.model.metrics import roc_auc
from fedlearn.trainer.apply import CloneSettings


class _NoRebase(AggregatedClonesArm):
    """The aggregated arm as it was before the rebase: the same fold, deltas kept whole."""

    def _fold(self, before: Mapping[str, Delta], users: Counter[str]) -> None:
        self.rounds += 1
        pairs = [(self.deltas[u], before.get(u), n) for u, n in users.items() if u in self.deltas]
        new, self._state, _ = fold_pairs(
            self.base, pairs, self.config, version=f"{self.base.version}+{self.rounds}",
            state=self._state, rng=self._rng,
        )  # fmt: skip
        if new is not None:
            self.base = new


def _run(arm: AggregatedClonesArm, live: Sequence[LabelledEvent], every: int) -> dict[str, Any]:
    scores = np.concatenate([arm.process(live[i : i + every]) for i in range(0, len(live), every)])
    labels = np.fromiter((y for _, _, y in live), np.float64, len(live))
    sizes = [len(d.to_bytes()) for d in arm.deltas.values()]
    rows = [len(d) for d in arm.deltas.values()]
    return {"auc": roc_auc(labels, scores), "rows_mean": float(np.mean(rows)), **_bytes(sizes)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agg-every", type=int, default=1000, help="live events per round")
    parser.add_argument("--river-events", type=int, default=2000, help="live events River times")
    parser.add_argument(
        "--min-row-users", type=int, default=None,
        help="override the rounds' min_row_users (default: the service's setting)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    source, events = (
        movielens_stream() if (MOVIELENS / "ratings.csv").is_file() else synthetic_stream()
    )
    half = len(events) // 2
    train, live = events[:half], events[half:]
    base = train_base([(x, y) for _, x, y in train], TrainConfig(n_factors=N_FACTORS)).base
    config = AggregationConfig()
    if args.min_row_users is not None:
        config = replace(config, min_row_users=args.min_row_users)
    hyper = {"settings": CloneSettings(lr=LR, bias_lr=BIAS_LR, l2=L2), "aggregation": config}
    result: dict[str, Any] = {
        "stream": source,
        "rebase": _run(AggregatedClonesArm(base, **hyper), live, args.agg_every),
        "no_rebase": _run(_NoRebase(base, **hyper), live, args.agg_every),
        "river": river(train, live, args.river_events, 1),
    }
    riv = result["river"]
    for arm in ("rebase", "no_rebase"):
        ours = result[arm]
        ours["ratio_mean"] = riv["bytes_mean"] / ours["bytes_mean"]
        ours["ratio_p50"] = riv["bytes_p50"] / ours["bytes_p50"]
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(
        f"stream: {source}, {len(live):,} live events, a round every {args.agg_every}, "
        f"strategy {config.strategy}, min_row_users {config.min_row_users}"
    )
    for arm in ("no_rebase", "rebase"):
        o = result[arm]
        print(
            f"{arm:>9}: delta mean {o['bytes_mean']:>8,.0f} B  p50 {o['bytes_p50']:>8,.0f} B  "
            f"p99 {o['bytes_p99']:>8,.0f} B  rows/user {o['rows_mean']:.0f}  AUC {o['auc']:.4f}  "
            f"-> {o['ratio_mean']:.0f}x (mean) / {o['ratio_p50']:.0f}x (p50) smaller than River"
        )
    print(
        f"    River: clone mean {riv['bytes_mean']:>8,.0f} B  p50 {riv['bytes_p50']:>8,.0f} B  "
        f"({riv['users_measured']} users)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
