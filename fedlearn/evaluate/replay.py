"""Offline replay: time-ordered progressive validation of several arms on one event log.

The first part of the log (by time) trains the bases; the rest is *live*: every arm predicts
each live event before it learns from it (test, then train), exactly as the stream workers do,
and all arms are scored on the same events. That answers the product's question with a real
log: do per-user clones beat the frozen base, one global online model, and River's FM used
the way a River user would use it?

The log is fed to the arms in blocks of ``agg_every`` events; an aggregating arm folds its
clones into the base after each block, the others are indifferent to the block size (a block
through ``learn_many`` is the same as its events one by one in time order).
"""

from __future__ import annotations

import math
import pickle  # only to weigh River's model, as a River user would store a copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.config import setting_default
from fedlearn.data.catalog import Dataset
from fedlearn.data.errors import DataError
from fedlearn.evaluate.arms import (
    AGG_RULES,
    AggregatedClonesArm,
    Arm,
    ClonesArm,
    FrozenArm,
    GatedClonesArm,
    GlobalArm,
    LabelledEvent,
)
from fedlearn.evaluate.compare import (
    Difference,
    LiveEvents,
    paired_bootstrap,
    per_user_log_loss,
    progressive_auc,
    share_worse,
)
from fedlearn.model import Base, TrainConfig, event_features, select_l2, train_base
from fedlearn.model.gating import GateSettings
from fedlearn.model.metrics import StreamingMetrics, group_auc, json_dict, roc_auc
from fedlearn.trainer.apply import CloneSettings

OUR_ARMS = ("frozen", "global", "clones", "clones-agg", "clones-gated")
RIVER_ARMS = ("river-frozen", "river-global", "river-clones", "river-clones-fedavg")
ALL_ARMS = OUR_ARMS + RIVER_ARMS
DEFAULT_ARMS = (
    "frozen",
    "global",
    "clones",
    "clones-agg",
    "clones-gated",
    "river-global",
    "river-clones",
    "river-clones-fedavg",
)

# Progress callback: (what is happening, units just done, units in total or None if unknown).
Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True, kw_only=True)
class ReplayConfig:
    """Everything that decides a replay's outcome; recorded with its results.

    The defaults were chosen on the first half of ml-latest-small alone (base on its first
    half, live on its second), never on the live half they are reported on; see BENCHMARKS.md.
    ``lr_multiples`` multiply ``lr`` for the clone arms (one arm per multiple); ``bias_lr``
    is the step of each user's own intercept and ``l2`` the pull of a delta toward the base.
    """

    split: float = 0.5
    arms: tuple[str, ...] = DEFAULT_ARMS
    lr: float = TrainConfig().lr  # the base's training lr, which clone lrs multiply
    lr_multiples: tuple[float, ...] = (1.0, 2.0, 4.0)
    # The service's clone defaults are the ones this replay chose, so they are read from there.
    bias_lr: float = setting_default("clone_bias_lr")
    l2: float = setting_default("clone_l2")
    max_rows: int = setting_default("clone_max_rows")
    # The update's levers (CloneSettings'), off as in the service: measured on rolling folds
    # of the first part (fedlearn.evaluate.tuning), neither paid (BENCHMARKS.md), so the
    # service has no setting for them; the replay keeps them to measure them again.
    shared_lr_scale: float = 1.0
    lr_half_life: float | None = None
    gate_decay: float = setting_default("gate_decay")
    gate_eta: float = setting_default("gate_eta")
    gate_blend: bool = setting_default("gate_blend")  # serve the gate's mixture, not a switch
    # Lever, off as in the service (measured on the folds, it did not meet the regret target
    # without costing gAUC; BENCHMARKS.md): the clone's log odds in a new user's gate.
    gate_prior: float = 0.0
    learned_start: bool = False  # lever: a new user's row starts from the rounds' mean
    agg_every: int = 1000
    # Lever (None: the service's, 1): rows fewer users changed in a round stay private (2 keeps
    # a film only one user rated out of the base). user=<id> rows stay private whatever it is.
    agg_min_row_users: int | None = None
    agg_rule: str = "row-mean"
    first_n: int = 5
    late_after_rounds: int = 5
    limit: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    l2_grid: tuple[float, ...] = (1e-5, 1e-4, 1e-3)
    river_lr: float = 0.05
    river_passes: int = 3
    min_user_events: int = 10
    bootstrap: int = 200
    curve_points: int = 50

    def clone_settings(self, multiple: float = 1.0) -> CloneSettings:
        """The trainer's settings for a clone arm whose lr is ``multiple`` x ``lr``."""
        return CloneSettings(
            lr=self.lr * multiple, l2=self.l2, bias_lr=self.bias_lr, max_rows=self.max_rows,
            shared_lr_scale=self.shared_lr_scale, lr_half_life=self.lr_half_life,
        )  # fmt: skip

    def __post_init__(self) -> None:
        if not 0.0 < self.split < 1.0:
            raise ValueError(f"split must be between 0 and 1 (exclusive), got {self.split}")
        unknown = [a for a in self.arms if a not in ALL_ARMS]
        if unknown:
            raise ValueError(f"unknown arm {unknown[0]!r}; choose from {', '.join(ALL_ARMS)}")
        if not self.arms:
            raise ValueError(f"no arms to replay; choose from {', '.join(ALL_ARMS)}")
        if not self.lr_multiples or any(m <= 0 for m in self.lr_multiples):
            raise ValueError(f"lr multiples must be positive, got {list(self.lr_multiples)}")
        for name in ("lr", "bias_lr", "river_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.l2 < 0 or any(v < 0 for v in self.l2_grid):
            raise ValueError(f"l2 must be zero or positive, got {self.l2} / {list(self.l2_grid)}")
        for name in ("agg_every", "first_n", "river_passes", "late_after_rounds", "curve_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.shared_lr_scale <= 1.0:
            raise ValueError(f"shared_lr_scale must be in (0, 1], got {self.shared_lr_scale}")
        if self.lr_half_life is not None and not self.lr_half_life > 0:
            raise ValueError(f"lr_half_life must be positive, got {self.lr_half_life}")
        if self.agg_min_row_users is not None and self.agg_min_row_users < 1:
            raise ValueError(f"agg_min_row_users must be at least 1, got {self.agg_min_row_users}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be zero (none) or positive, got {self.bootstrap}")
        if self.limit is not None and self.limit < 2:
            raise ValueError(f"limit must be at least 2 events, got {self.limit}")
        if self.agg_rule not in AGG_RULES:
            raise ValueError(
                f"agg_rule must be one of {', '.join(AGG_RULES)}, got {self.agg_rule!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["arms"] = list(self.arms)
        out["lr_multiples"] = list(self.lr_multiples)
        out["l2_grid"] = list(self.l2_grid)
        return out


@dataclass(frozen=True)
class ArmResult:
    """One arm's scores on the live events, and the seconds it spent predicting and learning."""

    arm: str
    n: int
    auc: float
    gauc: float
    log_loss: float
    auc_first: float
    auc_later: float
    n_first: int
    seconds: float
    # Users whose first live event came after the first ``late_after_rounds`` rounds: those
    # aggregation is meant to help (they start from a base the rounds improved).
    auc_late_users: float = math.nan
    gauc_late_users: float = math.nan
    n_late_users: int = 0
    # The gated arm only: mean over users of (the served predictions' log loss minus the better
    # of clone and base for that user), and the largest such difference.
    gate_regret_mean: float = math.nan
    gate_regret_max: float = math.nan
    # Share of users with >= ``min_user_events`` live events whose own log loss is worse than
    # under the frozen base / the global online arm.
    worse_than_frozen: float = math.nan
    worse_than_global: float = math.nan
    # Per-user clone arms: the mean size of a user's delta (its binary form) after the replay.
    delta_bytes_mean: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return json_dict(self)


@dataclass
class ReplayResult:
    config: ReplayConfig
    dataset: str
    n_train: int
    n_live: int
    live_users: int
    new_live_users: int
    split_ts: float
    arms: list[ArmResult]
    timings: dict[str, float]
    # The reference arm minus every other, per metric, with paired bootstrap intervals.
    differences: list[Difference] = field(default_factory=list)
    # What one River per-user copy weighs (pickled), when River's arms ran.
    river_copy_bytes: int | None = None
    # Per arm, (live events seen, AUC so far) at evenly spaced moments: the progressive curve.
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    # The drift events the trainers' detectors would have raised (fedlearn.evaluate.drift).
    drift: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "n_train": self.n_train,
            "n_live": self.n_live,
            "live_users": self.live_users,
            "new_live_users": self.new_live_users,
            "split_ts": self.split_ts,
            "first_n": self.config.first_n,
            "arms": [a.to_dict() for a in self.arms],
            "differences": [d.to_dict() for d in self.differences],
            "river_copy_bytes": self.river_copy_bytes,
            "curves": self.curves,
            "timings": self.timings,
            "config": self.config.to_dict(),
            "drift": self.drift,
        }


@dataclass(frozen=True)
class Log:
    """A dataset's events as labelled feature dicts, in time order."""

    events: list[LabelledEvent]
    ts: np.ndarray
    source: str


def load_log(folder: str | Path, *, limit: int | None = None) -> Log:
    """Read a dataset folder into labelled events (``(user, features, label)``), time-ordered.

    Raises :class:`DataError` for a missing folder or file, a bad row, or an empty log.
    """
    dataset = Dataset.load(folder)
    events: list[LabelledEvent] = []
    ts: list[float] = []
    items, users = dataset.items, dataset.users
    for event in dataset.events():
        if limit is not None and len(events) >= limit:
            break
        x = event_features(
            event.user, event.item, event.context, items.get(event.item), users.get(event.user)
        )
        events.append((event.user, x, event.label))
        ts.append(event.ts)
    if not events:
        raise DataError(dataset.events_path, None, "holds no events; there is nothing to replay")
    return Log(events, np.asarray(ts), dataset.manifest.source or str(folder))


def fit_base(
    samples: Sequence[tuple[dict[str, float], int]],
    config: TrainConfig,
    l2_grid: Sequence[float] = (),
    *,
    meta: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> tuple[Base, dict[str, Any]]:
    """Train a base as ``fedlearn train-base`` does; with ``l2_grid``, L2 is chosen first on
    the validation tail (each value one :func:`select_l2` trial, so progress can be shown).

    Returns the base and a summary (chosen L2, the grid's validation losses, epochs).
    """
    summary: dict[str, Any] = {}
    if l2_grid:
        trials: list[dict[str, float]] = []
        for l2 in l2_grid:
            trials += select_l2(samples, [l2], config)[1]
            if progress:
                progress("choosing the base's L2 (trials)", 1, len(l2_grid))
        chosen = min(trials, key=lambda t: t["valid_log_loss"])["l2"]
        config = replace(config, l2_w=chosen, l2_v=chosen)
        summary["l2_grid"] = trials

    def on_epoch(record: dict[str, float]) -> None:
        if progress:  # early stopping decides how many epochs there will be
            progress("training the base (epochs)", 1, None)

    result = train_base(samples, config, meta=meta, progress=on_epoch)
    select = [h for h in result.history if h.get("phase") == "select"]
    summary.update(l2=config.l2_w, epochs=result.epochs)
    if select:
        best = min(select, key=lambda h: h["valid_log_loss"])
        summary.update(valid_log_loss=best["valid_log_loss"], valid_auc=best["valid_auc"])
    return result.base, summary


def _make_arms(name: str, base: Base | None, river_base: Any, config: ReplayConfig) -> list[Arm]:
    """The arm(s) called ``name``: one per lr multiple for the clone arms."""
    one = config.clone_settings()
    aggregation = AggregationConfig()
    if config.agg_min_row_users is not None:
        aggregation = replace(aggregation, min_row_users=config.agg_min_row_users)
    if name == "frozen":
        return [FrozenArm(base)]
    if name == "global":
        return [GlobalArm(base, settings=one)]
    if name == "clones":
        return [
            ClonesArm(base, settings=config.clone_settings(m), name=f"clones x{m:g}")
            for m in config.lr_multiples
        ]
    if name == "clones-gated":
        gating = GateSettings(
            decay=config.gate_decay, eta=config.gate_eta, blend=config.gate_blend,
            prior=config.gate_prior,
        )  # fmt: skip
        return [
            GatedClonesArm(
                base, settings=one, rule=config.agg_rule, gating=gating,
                learned_start=config.learned_start, aggregation=aggregation,
            )
        ]  # fmt: skip
    if name == "clones-agg":
        return [
            AggregatedClonesArm(
                base,
                settings=config.clone_settings(m),
                rule=config.agg_rule,
                name=f"clones-agg x{m:g}",
                learned_start=config.learned_start,
                aggregation=aggregation,
            )
            for m in config.lr_multiples
        ]
    from fedlearn.evaluate import river_arms as ra

    if name == "river-frozen":
        return [ra.RiverFrozenArm(river_base)]
    if name == "river-global":
        return [ra.RiverGlobalArm(river_base, lr=config.river_lr)]
    if name == "river-clones":
        return [ra.RiverClonesArm(river_base, lr=config.river_lr)]
    return [ra.RiverFedAvgArm(river_base, lr=config.river_lr)]


def _gate_regret(arm: GatedClonesArm, events: LiveEvents, served: np.ndarray):
    """Per user: served log loss minus the better of the clone's and the base's."""
    clone = per_user_log_loss(events, np.concatenate(arm.clone_predictions))
    base = per_user_log_loss(events, np.concatenate(arm.base_predictions))
    regret = per_user_log_loss(events, served) - np.minimum(clone, base)
    return float(regret.mean()), float(regret.max())


def _score(
    arm: Arm,
    live: Sequence[LabelledEvent],
    events: LiveEvents,
    config: ReplayConfig,
    progress: Progress | None,
    late: np.ndarray,
) -> tuple[ArmResult, np.ndarray]:
    """Run ``arm`` over ``live`` block by block; its scores and its predictions."""
    metrics = StreamingMetrics(first_n=config.first_n)
    seconds = 0.0
    served = []
    for start in range(0, len(live), config.agg_every):
        block = live[start : start + config.agg_every]
        began = time.perf_counter()
        predictions = arm.process(block)
        seconds += time.perf_counter() - began
        metrics.add_many((u for u, _, _ in block), (y for _, _, y in block), predictions)
        served.append(predictions)
        if progress:
            progress(f"replaying {arm.name} (events)", len(block), len(live))
    report = metrics.report()
    p = np.concatenate(served)
    users, y = events.users, events.y
    extra: dict[str, float] = {}
    if isinstance(arm, GatedClonesArm):
        extra["gate_regret_mean"], extra["gate_regret_max"] = _gate_regret(arm, events, p)
    if isinstance(arm, ClonesArm) and not isinstance(arm, GlobalArm) and arm.deltas:
        extra["delta_bytes_mean"] = float(np.mean([len(d.to_bytes()) for d in arm.deltas.values()]))
    result = ArmResult(
        arm=arm.name,
        n=report.n,
        auc=report.auc,
        gauc=report.gauc,
        log_loss=report.log_loss,
        auc_first=report.auc_first,
        auc_later=report.auc_later,
        n_first=report.n_first,
        seconds=seconds,
        auc_late_users=roc_auc(y[late], p[late]) if late.any() else math.nan,
        gauc_late_users=group_auc(users[late], y[late], p[late]) if late.any() else math.nan,
        n_late_users=len(set(users[late].tolist())),
        **extra,
    )
    return result, p


def replay(
    folder: str | Path, config: ReplayConfig | None = None, *, progress: Progress | None = None
) -> ReplayResult:
    """Replay the dataset folder with ``config``; see the module docstring."""
    config = config or ReplayConfig()
    began = time.perf_counter()
    log = load_log(folder, limit=config.limit)
    events = log.events
    cut = int(len(events) * config.split)
    if cut < 1 or cut >= len(events):
        raise DataError(
            folder,
            None,
            f"{len(events)} events split at {config.split} leave no events to "
            f"{'train on' if cut < 1 else 'replay'}; use a longer log or another --split",
        )
    train, live = events[:cut], events[cut:]
    timings = {"load": time.perf_counter() - began}
    base = river_base = None
    if any(a in OUR_ARMS for a in config.arms):
        began = time.perf_counter()
        base, _ = fit_base(
            [(x, y) for _, x, y in train],
            config.train,
            config.l2_grid,
            meta={"source": log.source},
            progress=progress,
        )
        timings["our_base"] = time.perf_counter() - began
    if any(a in RIVER_ARMS for a in config.arms):
        from fedlearn.evaluate.river_arms import train_river_base

        began = time.perf_counter()
        total = config.river_passes * len(train)
        river_base = train_river_base(
            [(x, y) for _, x, y in train],
            n_factors=config.train.n_factors,
            passes=config.river_passes,
            seed=config.train.seed,
            progress=(lambda done: progress("training River's base (events)", done, total))
            if progress
            else None,
        )
        timings["river_base"] = time.perf_counter() - began
    # One arm at a time, made just before it runs: River's per-user copies of one arm are
    # freed before the next arm makes its own.
    first_seen: dict[str, int] = {}
    for i, (user, _, _) in enumerate(live):
        first_seen.setdefault(user, i)
    after = config.late_after_rounds * config.agg_every
    late = np.fromiter((first_seen[u] >= after for u, _, _ in live), bool, len(live))
    events = live_events(live, config.first_n)
    scored = [
        _score(arm, live, events, config, progress, late)
        for name in config.arms
        for arm in _make_arms(name, base, river_base, config)
    ]
    began = time.perf_counter()
    results, differences, curves = _compare(events, config, scored)
    timings["compare"] = time.perf_counter() - began
    drift = []
    if base is not None:
        from fedlearn.evaluate.drift import replay_drift

        began = time.perf_counter()
        found = replay_drift(
            live, log.ts[cut:], base, settings=config.clone_settings(), round_every=config.agg_every
        )
        drift = [d.to_dict() for d in found]
        timings["drift"] = time.perf_counter() - began
    train_users = {u for u, _, _ in train}
    live_users = {u for u, _, _ in live}
    return ReplayResult(
        config=config,
        dataset=log.source,
        n_train=len(train),
        n_live=len(live),
        live_users=len(live_users),
        new_live_users=len(live_users - train_users),
        split_ts=float(log.ts[cut]),
        arms=results,
        timings=timings,
        differences=differences,
        curves=curves,
        river_copy_bytes=None if river_base is None else len(pickle.dumps(river_base)),
        drift=drift,
    )


def reference_arm(names: Sequence[str]) -> str | None:
    """The arm the service runs (gated aggregated clones), or the closest one replayed."""
    for prefix in ("clones-gated", "clones-agg", "clones"):
        for name in names:
            if name.startswith(prefix):
                return name
    return None


def live_events(live: Sequence[LabelledEvent], first_n: int) -> LiveEvents:
    """The live events' user indices, labels and each user's position among them."""
    index: dict[str, int] = {}
    seen: dict[str, int] = {}
    users, position = np.empty(len(live), np.int64), np.empty(len(live), np.int64)
    for i, (user, _, _) in enumerate(live):
        users[i] = index.setdefault(user, len(index))
        position[i] = seen.get(user, 0)
        seen[user] = position[i] + 1
    y = np.fromiter((y for _, _, y in live), np.float64, len(live))
    return LiveEvents(users, y, position, first_n)


def _compare(
    events: LiveEvents,
    config: ReplayConfig,
    scored: list[tuple[ArmResult, np.ndarray]],
) -> tuple[list[ArmResult], list[Difference], dict[str, list[tuple[int, float]]]]:
    """Per-user shares against the frozen and global arms, the reference arm's paired
    bootstrap differences, and every arm's progressive AUC curve."""
    predictions = {result.arm: p for result, p in scored}
    results = []
    for result, p in scored:
        shares = {
            f"worse_than_{ref}": share_worse(events, p, predictions[ref], config.min_user_events)
            for ref in ("frozen", "global")
            if ref in predictions and ref != result.arm
        }
        results.append(replace(result, **shares))
    reference = reference_arm(list(predictions))
    differences = []
    if reference is not None and config.bootstrap:
        differences = paired_bootstrap(
            events, predictions, reference, resamples=config.bootstrap, seed=config.train.seed
        )
    curves = {a: progressive_auc(events.y, p, config.curve_points) for a, p in predictions.items()}
    return results, differences, curves
