"""How fast a clone learns, and how big it is: our batched update vs River's FMClassifier.

    python benchmarks/bench_update.py [--batch 1000] [--river-events 20000] [--json]

The stream is the live half (by time) of MovieLens ml-latest-small when the folder is there
(``FEDLEARN_MOVIELENS`` or ``../shared/data/ml-latest-small``), else a synthetic log from
``fedlearn.data.synthetic``. The first half trains the bases. On one core (BLAS threads pinned
to 1), it measures

- events/s of our test-then-train clone update, ``learn_many`` over batches of ``--batch``
  events in time order, as a stream worker runs it, against River's ``predict_proba_one`` +
  ``learn_one`` on one model with the same number of factors (best of ``--repeat`` passes);
- bytes per user: our delta (``len(delta.to_bytes())`` after the stream) against a River
  per-user clone (``len(pickle.dumps(clone))``; pickle only to measure River's size).
"""

from __future__ import annotations

import os

# One core: set before numpy is imported anywhere.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from fedlearn.evaluate.arms import LabelledEvent  # noqa: E402
from fedlearn.model import Delta, TrainConfig, event_features, learn_many, train_base  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MOVIELENS = Path(
    os.environ.get("FEDLEARN_MOVIELENS", REPO.parent / "shared" / "data" / "ml-latest-small")
)
N_FACTORS = 10
LR, BIAS_LR, L2 = 0.05, 0.2, 0.2  # the replay's defaults


def movielens_stream() -> tuple[str, list[LabelledEvent]]:
    from fedlearn.data.movielens import convert_movielens
    from fedlearn.evaluate.replay import load_log

    with tempfile.TemporaryDirectory() as tmp:
        convert_movielens(MOVIELENS, Path(tmp) / "ml")
        log = load_log(Path(tmp) / "ml")
    return "MovieLens ml-latest-small", log.events


def synthetic_stream(
    n_users: int = 2000,
    n_items: int = 1000,
    events_per_user: int = 50,
    source: str = "synthetic (2,000 users, 100,000 events, seed 0)",
) -> tuple[str, list[LabelledEvent]]:
    """``(source, events)`` of a synthetic log (seed 0); the defaults are the benchmark's."""
    from fedlearn.data.synthetic import SyntheticConfig, generate

    config = SyntheticConfig(
        n_users=n_users, n_items=n_items, events_per_user=events_per_user, seed=0
    )
    log = generate(config)
    items = log.items()
    events = [
        (e.user, event_features(e.user, e.item, e.context, items[e.item]), e.label)
        for e in log.events()
    ]
    return source, events


def _replay(base: Any, live: Sequence[LabelledEvent], batch: int) -> tuple[float, dict]:
    deltas: dict[str, Delta] = {}
    started = time.perf_counter()
    for start in range(0, len(live), batch):
        learn_many(base, deltas, live[start : start + batch], LR, L2, BIAS_LR)
    return time.perf_counter() - started, deltas


def _speed(events: int, seconds: float) -> dict[str, float]:
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds}


def _bytes(sizes: Sequence[int]) -> dict[str, float]:
    """Mean, median and p99 of the per-user model sizes: the same figures for both sides."""
    arr = np.array(sizes)
    return {
        "bytes_mean": float(arr.mean()),
        "bytes_p50": float(np.percentile(arr, 50)),
        "bytes_p99": float(np.percentile(arr, 99)),
    }


def ours(
    train: Sequence[LabelledEvent], live: Sequence[LabelledEvent], batch: int, repeat: int
) -> dict:
    base = train_base([(x, y) for _, x, y in train], TrainConfig(n_factors=N_FACTORS)).base
    # One untimed pass first: it fills the cache of the starting latents of features the base
    # never saw (new films), which a running trainer has long filled. Then the best of
    # ``repeat`` passes, each from empty deltas, as for River.
    _replay(base, live, batch)
    seconds, deltas = min((_replay(base, live, batch) for _ in range(repeat)), key=lambda r: r[0])
    sizes = [len(d.to_bytes()) for d in deltas.values()]
    return {**_speed(len(live), seconds), "users": len(deltas), **_bytes(sizes)}


def _river_pass(base: Any, stream: Sequence[LabelledEvent]) -> float:
    from fedlearn.evaluate.river_arms import with_lr

    model = with_lr(base, LR)
    started = time.perf_counter()
    for _, x, y in stream:
        model.predict_proba_one(x)
        model.learn_one(x, bool(y))
    return time.perf_counter() - started


def river(
    train: Sequence[LabelledEvent], live: Sequence[LabelledEvent], n_events: int, repeat: int
) -> dict:
    from fedlearn.evaluate.river_arms import train_river_base, with_lr

    # One pass is enough here: speed and size depend on the features, not on the fit.
    base = train_river_base([(x, y) for _, x, y in train], n_factors=N_FACTORS, passes=1)
    stream = live[:n_events]
    seconds = min(_river_pass(base, stream) for _ in range(repeat))
    # A per-user clone as River users make one: a deep copy of the base that learned the
    # user's events. Measured on up to 50 users spread over the stream.
    by_user: dict[str, list[LabelledEvent]] = {}
    for event in live:
        by_user.setdefault(event[0], []).append(event)
    users = list(by_user)[:: max(1, len(by_user) // 50)][:50]
    sizes = []
    for user in users:
        clone = copy.deepcopy(with_lr(base, LR))
        for _, x, y in by_user[user]:
            clone.learn_one(x, bool(y))
        sizes.append(len(pickle.dumps(clone)))
    return {**_speed(len(stream), seconds), "users_measured": len(users), **_bytes(sizes)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1000, help="events per learn_many call")
    parser.add_argument(
        "--river-events", type=int, default=20_000, help="live events River is timed on"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if min(args.batch, args.river_events, args.repeat) < 1:
        parser.error("--batch, --river-events and --repeat must be at least 1")

    source, events = (
        movielens_stream() if (MOVIELENS / "ratings.csv").is_file() else synthetic_stream()
    )
    half = len(events) // 2
    train, live = events[:half], events[half:]
    our = ours(train, live, args.batch, args.repeat)
    riv = river(train, live, args.river_events, args.repeat)
    result: dict[str, Any] = {
        "stream": source,
        "live_events": len(live),
        "batch": args.batch,
        "ours": our,
        "river": riv,
        "speedup": our["events_per_s"] / riv["events_per_s"],
        "size_ratio_mean": riv["bytes_mean"] / our["bytes_mean"],
        "size_ratio_p50": riv["bytes_p50"] / our["bytes_p50"],
    }
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"stream: {source}, {len(live):,} live events, one core, best of {args.repeat}")
    print(
        f"update  ours  learn_many x{args.batch}: {our['events_per_s']:>10,.0f} events/s "
        f"({our['events']:,} events in {our['seconds']:.2f} s)"
    )
    print(
        f"        River predict+learn_one:  {riv['events_per_s']:>10,.0f} events/s "
        f"({riv['events']:,} events in {riv['seconds']:.2f} s)"
    )
    print(f"        ratio: {result['speedup']:.1f}x")
    print(
        f"size    our delta:   mean {our['bytes_mean']:>10,.0f} B  p50 {our['bytes_p50']:>10,.0f} B"
        f"  p99 {our['bytes_p99']:>10,.0f} B  ({our['users']} users)"
    )
    print(
        f"        River clone: mean {riv['bytes_mean']:>10,.0f} B  p50 {riv['bytes_p50']:>10,.0f} B"
        f"  p99 {riv['bytes_p99']:>10,.0f} B  ({riv['users_measured']} users)"
    )
    print(
        f"        ratio: {result['size_ratio_mean']:.0f}x smaller (mean), "
        f"{result['size_ratio_p50']:.0f}x (p50)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
