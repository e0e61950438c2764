"""Drift: how soon the trainers' detectors see a taste shift, how often they cry wolf, what an
early round buys, and what the detectors cost.

    python benchmarks/bench_drift.py [--seeds 10] [--users 2000] [--events-per-user 100]
                                     [--plot benchmarks/results/drift_recovery.svg] [--json]

Per seed, two synthetic logs (``fedlearn.data.synthetic``) that differ only after
``--shift-at``: one where every user's taste and the items' biases shift there, one without.
A base is trained on the first ``--train`` share of events; the rest is streamed in batches
of ``--batch`` through :class:`fedlearn.evaluate.drift.DriftRoundsArm` (the trainer's
``learn_many_shadow``, its :class:`DriftDetectors`, the service's fold), with a scheduled
round every ``--round-every`` events, standing for the hourly schedule, and, in a second run
on the shifted log, early rounds on drift at most one per ``--min-gap`` events. Printed:

- detection delay: live events from the shift to the first drift event after it (median and
  range over seeds; the detectors see the stream in chunks of ``drift_chunk_events``);
- false alarms per 100,000 live events on the logs without a shift (every signal counted);
- progressive AUC of the clones after the shift, scheduled rounds only vs with early rounds,
  in windows of ``--window`` events (mean over seeds), and the plot of it (SVG);
- the detectors' cost: seconds in ``DriftDetectors`` (signals + ADWIN) against seconds in the
  clones' learning step, per event, and as a share of a 100,000 events/s trainer.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402

import fedlearn.trainer.drift as drift_module  # noqa: E402
from fedlearn.data.synthetic import SyntheticConfig, generate  # noqa: E402
from fedlearn.evaluate.drift import DriftRoundsArm  # noqa: E402
from fedlearn.evaluate.replay import ReplayConfig  # noqa: E402
from fedlearn.model import TrainConfig, event_features, train_base  # noqa: E402
from fedlearn.model.metrics import roc_auc  # noqa: E402

TRAINER_EVENTS_PER_S = 100_000  # the trainer being built in parallel (issue 12)


class _Timed:
    """Wraps a function, adding up the seconds spent in it."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args: Any, **kw: Any) -> Any:
        began = time.perf_counter()
        try:
            return self.fn(*args, **kw)
        finally:
            self.seconds += time.perf_counter() - began


def _log(args: argparse.Namespace, seed: int, shift: bool) -> tuple[list, np.ndarray, int]:
    """Live events, their true shift index in live coordinates (-1: none), and the base."""
    config = SyntheticConfig(
        n_users=args.users, events_per_user=args.events_per_user, seed=seed,
        shift_at=args.shift_at if shift else None,
    )  # fmt: skip
    log = generate(config)
    items = log.items()
    events = [
        (e.user, event_features(e.user, e.item, e.context, items[e.item]), e.label)
        for e in log.events()
    ]
    cut = int(len(events) * args.train)
    shift_ts = config.start_ts + args.shift_at * config.days * 86_400
    shift_at = int(np.searchsorted(log.ts, shift_ts)) - cut
    base = train_base([(x, y) for _, x, y in events[:cut]], TrainConfig(seed=seed)).base
    return events[cut:], base, shift_at


def _run(args: argparse.Namespace, live: list, base: Any, *, early: bool) -> DriftRoundsArm:
    arm = DriftRoundsArm(
        base, round_every=args.round_every, early_rounds=early, min_gap=args.min_gap,
        settings=ReplayConfig().clone_settings(),  # the service's clone defaults
    )  # fmt: skip
    predictions = []
    for start in range(0, len(live), args.batch):
        predictions.append(arm.process(live[start : start + args.batch]))
    arm.predictions = np.concatenate(predictions)  # type: ignore[attr-defined]
    return arm


def _windowed_auc(live: list, p: np.ndarray, start: int, window: int, n: int) -> list[float]:
    y = np.fromiter((y for _, _, y in live), float, len(live))
    out = []
    for k in range(n):
        lo, hi = start + k * window, start + (k + 1) * window
        out.append(roc_auc(y[lo:hi], p[lo:hi]) if hi <= len(y) else float("nan"))
    return out


def _svg(curves: dict[str, list[float]], window: int, path: Path) -> None:
    """A small line chart, no plotting library: x = events after the shift, y = AUC."""
    w, h, pad = 640, 320, 48
    values = [v for c in curves.values() for v in c if v == v]
    lo, hi = min(values) - 0.01, max(values) + 0.01
    n = max(len(c) for c in curves.values())
    colors = ["#888888", "#d62728"]

    def xy(i: int, v: float) -> str:
        return f"{pad + i * (w - 2 * pad) / max(1, n - 1):.1f},{h - pad - (v - lo) * (h - 2 * pad) / (hi - lo):.1f}"  # noqa: E501

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'font-family="sans-serif" font-size="12"><rect width="100%" height="100%" '
             f'fill="white"/>']  # fmt: skip
    for k in range(5):
        v = lo + k * (hi - lo) / 4
        y = h - pad - k * (h - 2 * pad) / 4
        parts.append(f'<line x1="{pad}" y1="{y:.1f}" x2="{w - pad}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="4" y="{y + 4:.1f}">{v:.3f}</text>')  # fmt: skip
    for i in range(0, n, max(1, n // 6)):
        x = pad + i * (w - 2 * pad) / max(1, n - 1)
        parts.append(f'<text x="{x:.1f}" y="{h - pad + 16}">{(i + 1) * window:,}</text>')
    for curve, color in zip(curves.values(), colors, strict=False):
        points = " ".join(xy(i, v) for i, v in enumerate(curve) if v == v)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{points}"/>')  # fmt: skip
    for k, (name, color) in enumerate(zip(curves, colors, strict=False)):
        parts.append(f'<text x="{pad + 10}" y="{pad - 24 + 14 * k}" fill="{color}">{name}</text>')
    parts.append(f'<text x="{w / 2 - 120}" y="{h - 8}">live events after the shift '
                 f"(windows of {window:,})</text></svg>")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


def trainer_cost(batches: int, batch: int, n_shards: int = 8) -> dict[str, float]:
    """The trainer's side alone: ``DriftDetectors`` per shard and overall (8 ADWIN per
    shard's batch, as ``DriftMonitor`` runs them) plus the signals, on a long stream (the
    windows grown as in a trainer that has run for a while), in microseconds per event."""
    from fedlearn.model import Base

    names = [f"item={i}" for i in range(500)] + [f"genre=g{g}" for g in range(8)]
    base = Base.fresh(names + [f"hour={h}" for h in range(24)], 10, version="1")
    rng = np.random.default_rng(0)
    features = [
        {f"user=u{i % 300}": 1.0, f"item={i % 600}": 1.0, "genre=g1": 1.0, f"hour={i % 24}": 1.0}
        for i in range(batch)
    ]
    detectors = drift_module.DriftDetectors()
    signals_s = detect_s = 0.0
    for k in range(batches):
        labels = (rng.random(batch) < 0.4).astype(float)
        clone, base_p = rng.random(batch), rng.random(batch)
        began = time.perf_counter()
        signals = drift_module.batch_signals(labels, clone, base_p, features, base)
        middle = time.perf_counter()
        detectors.observe(k % n_shards, signals)
        signals_s += middle - began
        detect_s += time.perf_counter() - middle
    events = batches * batch
    per_event = 1e6 * (signals_s + detect_s) / events
    return {
        "signals_us_per_event": 1e6 * signals_s / events,
        "detectors_us_per_event": 1e6 * detect_s / events,
        "share_of_100k_trainer": per_event * 1e-6 * TRAINER_EVENTS_PER_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--events-per-user", type=int, default=100)
    parser.add_argument("--shift-at", type=float, default=0.6)
    parser.add_argument("--train", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--round-every", type=int, default=20_000)
    parser.add_argument("--min-gap", type=int, default=5_000)
    parser.add_argument("--window", type=int, default=2_000)
    parser.add_argument("--windows", type=int, default=15)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--trainer-cost", type=int, default=0, metavar="BATCHES",
        help="only measure the trainer side's cost over this many batches, and exit",
    )  # fmt: skip
    args = parser.parse_args()
    if args.trainer_cost:
        print(orjson.dumps(trainer_cost(args.trainer_cost, args.batch)).decode())
        return

    timed = _Timed(drift_module.DriftDetectors.observe)
    drift_module.DriftDetectors.observe = lambda self, *a: timed(self, *a)  # type: ignore[method-assign]
    import fedlearn.evaluate.drift as replay_side

    learn = _Timed(replay_side.learn_many_shadow)
    replay_side.learn_many_shadow = learn  # type: ignore[assignment]
    signals = _Timed(replay_side.batch_signals)
    replay_side.batch_signals = signals  # type: ignore[assignment]

    delays, alarms_before, alarms_clean, clean_events = [], 0, 0, 0
    before_events = 0
    curves: dict[str, list[list[float]]] = {"scheduled rounds": [], "with early rounds": []}
    events_timed = 0
    for seed in range(args.seeds):
        live, base, shift = _log(args, seed, shift=True)
        scheduled = _run(args, live, base, early=False)
        events_timed += 2 * len(live)
        after = [d.index for d in scheduled.found if d.index > shift]
        delays.append(after[0] - shift if after else None)
        alarms_before += sum(1 for d in scheduled.found if d.index <= shift)
        before_events += shift
        early = _run(args, live, base, early=True)
        for name, arm in (("scheduled rounds", scheduled), ("with early rounds", early)):
            curves[name].append(
                _windowed_auc(live, arm.predictions, shift, args.window, args.windows)
            )
        clean_live, clean_base, _ = _log(args, seed, shift=False)
        clean = _run(args, clean_live, clean_base, early=False)
        alarms_clean += len(clean.found)
        clean_events += len(clean_live)
        events_timed += len(clean_live)
        print(f"seed {seed}: delay {delays[-1]} events; {len(scheduled.found)} events on the "
              f"shifted log, {len(clean.found)} on the clean one", flush=True)  # fmt: skip
    detected = [d for d in delays if d is not None]
    mean_curves = {k: np.nanmean(np.array(v), axis=0).tolist() for k, v in curves.items()}
    detect_s = timed.seconds
    result = {
        "seeds": args.seeds,
        "live_events_per_log": clean_events // args.seeds,
        "delay_median": statistics.median(detected) if detected else None,
        "delay_min": min(detected, default=None),
        "delay_max": max(detected, default=None),
        "missed": sum(1 for d in delays if d is None),
        "false_alarms_per_100k_clean": 1e5 * alarms_clean / clean_events,
        "false_alarms_per_100k_before_shift": 1e5 * alarms_before / max(1, before_events),
        "auc_after_shift": mean_curves,
        "auc_first_10k": {
            k: float(np.nanmean(v[: max(1, 10_000 // args.window)])) for k, v in mean_curves.items()
        },
        "detector_us_per_event": 1e6 * detect_s / events_timed,
        "signals_us_per_event": 1e6 * signals.seconds / events_timed,
        "learn_us_per_event": 1e6 * learn.seconds / events_timed,
    }
    per_event = result["detector_us_per_event"] + result["signals_us_per_event"]
    result["share_of_learn_step"] = per_event / result["learn_us_per_event"]
    result["share_of_100k_trainer"] = per_event * 1e-6 * TRAINER_EVENTS_PER_S
    if args.plot:
        _svg(mean_curves, args.window, args.plot)
        result["plot"] = str(args.plot)
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    for key, value in result.items():
        if key != "auc_after_shift":
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
