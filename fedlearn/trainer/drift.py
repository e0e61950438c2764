"""Drift detection: River's ADWIN on the trainer's own signals, per shard and overall.

After every committed batch the trainer hands :class:`DriftMonitor` the batch's labels, the
clones' and the base's progressive predictions and the features it trained on. Four signals
are watched: the progressive log loss of the clones (``clone_loss``) and of the base
(``base_loss``), the click rate, and the share of features the base has never seen
(``unseen_share``, users' own ``user=`` features aside, estimated on at most
``UNSEEN_SAMPLE`` events of a batch: looking up every feature of every event would cost a few
per cent of a fast trainer by itself).

Why chunks, not events: ADWIN costs about 0.3 us per update in River, and 4 signals x (shard +
overall) per event would be ~2.7 us, a quarter of the time of a 100,000 events/s trainer.
Each signal's per-event values are instead averaged in chunks of ``chunk_events`` events
(carried across batches, so what ADWIN sees does not depend on how the load cut the stream
into batches) and each chunk's mean is one ADWIN observation (``clock=1``: each is checked).
Small chunks, not one mean per batch: ADWIN's bound has a term for values in [0, 1] that
shrinks only with the number of observations, so a few very precise means (one per 500
events) took ~80 observations, 40,000 events, to show a shift that 32-event chunks show
within ~3,000 (BENCHMARKS.md). A lower loss or a lower unseen share is the model learning,
not drift: only increases of those are reported; the click rate counts both ways.

:class:`DriftDetectors` is pure (the replay runs it too, ``fedlearn.evaluate.drift``);
:class:`DriftMonitor` adds the counter, the record in Redis and the actions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from river.drift import ADWIN

from fedlearn.config import setting_default
from fedlearn.model import Base
from fedlearn.model.metrics import log_losses
from fedlearn.store.drift import SIGNALS, DriftEvent, DriftLog
from fedlearn.telemetry import trainer as metrics

log = logging.getLogger(__name__)

UNSEEN_SAMPLE = 64
USER_FEATURE = "user="  # a new user's own feature is unseen by definition: arrival, not drift
# Which way a signal must move to be drift: +1 only up, 0 either way.
DIRECTION = {"clone_loss": 1, "base_loss": 1, "click_rate": 0, "unseen_share": 1}
Signals = Mapping[str, np.ndarray]  # signal -> its value per event (a sample, for unseen)


@dataclass(frozen=True)
class DriftSettings:
    """How the detectors work (defaults: the service's settings)."""

    chunk_events: int = setting_default("drift_chunk_events")
    delta: float = setting_default("drift_delta")


def batch_signals(
    labels: np.ndarray,
    clone: np.ndarray,
    base_p: np.ndarray,
    features: Sequence[Mapping[str, float]],
    base: Base,
) -> dict[str, np.ndarray]:
    """A batch's signals, per event."""
    return {
        "clone_loss": log_losses(labels, clone),
        "base_loss": log_losses(labels, base_p),
        "click_rate": labels,
        "unseen_share": unseen_shares(features, base),
    }


def unseen_shares(features: Sequence[Mapping[str, float]], base: Base) -> np.ndarray:
    """For at most ``UNSEEN_SAMPLE`` evenly spaced events of ``features``: the share of their
    features (users' own aside) that ``base`` has no row for."""
    index = base.index
    shares = []
    for x in features[:: max(1, len(features) // UNSEEN_SAMPLE)]:
        names = [name for name in x if not name.startswith(USER_FEATURE)]
        if names:
            shares.append(sum(1 for name in names if name not in index) / len(names))
    return np.array(shares)


class _Watch:
    """One signal over one scope: per-event values averaged in chunks of ``chunk`` events
    (the last, partial chunk carried over to the next batch), each chunk's mean fed to ADWIN."""

    __slots__ = ("adwin", "carried", "carry", "events")

    def __init__(self, delta: float) -> None:
        self.adwin = ADWIN(delta=delta, clock=1)
        self.carry = 0.0  # sum of the values of the partial chunk
        self.carried = 0
        self.events = 0

    def add(self, values: np.ndarray, chunk: int) -> list[tuple[float, float, int]]:
        """(mean of the part ADWIN dropped, mean of what it kept, events seen) per change."""
        need = chunk - self.carried
        if len(values) < need:
            self.carry += float(values.sum())
            self.carried += len(values)
            return []
        full = (len(values) - need) // chunk
        first = (self.carry + float(values[:need].sum())) / chunk
        rest = values[need : need + full * chunk].reshape(full, chunk).mean(axis=1)
        tail = values[need + full * chunk :]
        self.carry, self.carried = float(tail.sum()), len(tail)
        changes = []
        for k, mean in enumerate([first, *rest.tolist()]):
            width, total = self.adwin.width, self.adwin.estimation * self.adwin.width
            self.adwin.update(mean)
            if self.adwin.drift_detected:
                kept = self.adwin.estimation
                dropped = (total + mean - kept * self.adwin.width) / max(
                    1.0, width + 1 - self.adwin.width
                )
                changes.append((dropped, kept, self.events + need + k * chunk))
        self.events += len(values)
        return changes


class DriftDetectors:
    """ADWIN per (signal, shard) and per signal over all shards (``shard=None``); pure."""

    def __init__(self, settings: DriftSettings | None = None) -> None:
        self.settings = settings or DriftSettings()
        self._watches: dict[tuple[str, int | None], _Watch] = {}

    def observe(self, shard: int | None, signals: Signals) -> list[DriftEvent]:
        """Feed one batch of ``shard`` (its signals per event); returns the drift found."""
        found = []
        scopes = (shard, None) if shard is not None else (None,)
        for scope in scopes:
            for signal in SIGNALS:
                watch = self._watches.get((signal, scope))
                if watch is None:
                    watch = self._watches[(signal, scope)] = _Watch(self.settings.delta)
                for before, after, events in watch.add(signals[signal], self.settings.chunk_events):
                    if DIRECTION[signal] * (after - before) >= 0:  # else: the model improving
                        found.append(DriftEvent(signal, scope, before, after, events))
        return found

    def forget(self, shard: int) -> None:
        """Drop ``shard``'s detectors (the shard moved to another trainer)."""
        for key in [k for k in self._watches if k[1] == shard]:
            del self._watches[key]


Act = Callable[[DriftEvent], dict[str, Any]]


class DriftMonitor:
    """The trainer's side: detect, count, act, record each event with its actions.

    ``act`` (``fedlearn.jobs.drift.DriftActions`` in a worker) returns what it did; a failing
    action is recorded with its error and never stops training.
    """

    def __init__(
        self,
        drift_log: DriftLog,
        *,
        trainer: str,
        settings: DriftSettings | None = None,
        act: Act | None = None,
    ) -> None:
        self.detectors = DriftDetectors(settings)
        self.drift_log = drift_log
        self.trainer = trainer
        self.act = act
        self.seconds = 0.0  # time spent detecting (the bench reports its share)

    def observe(
        self,
        shard: int,
        labels: np.ndarray,
        clone: np.ndarray,
        base_p: np.ndarray,
        features: Sequence[Mapping[str, float]],
        base: Base,
    ) -> list[DriftEvent]:
        """One applied batch of ``shard``; returns the drift events recorded."""
        if not len(labels):
            return []
        began = time.perf_counter()
        found = self.detectors.observe(shard, batch_signals(labels, clone, base_p, features, base))
        self.seconds += time.perf_counter() - began
        return [self._record(event) for event in found]

    def _record(self, event: DriftEvent) -> DriftEvent:
        metrics.DRIFT_EVENTS.labels(signal=event.signal).inc()
        actions: dict[str, Any] = {}
        if self.act is not None:
            try:
                actions = self.act(event)
            except Exception as exc:  # an unreachable broker must not stop training
                log.exception("acting on drift of %s failed", event.signal)
                actions = {"error": f"{type(exc).__name__}: {exc}"}
        event = replace(event, trainer=self.trainer, actions=actions)
        event = replace(event, id=self.drift_log.record(event))
        where = "all shards" if event.shard is None else f"shard {event.shard}"
        log.warning(
            "drift in %s over %s: %.4f -> %.4f after %d events; actions: %s",
            event.signal, where, event.before, event.after, event.events, actions or "none",
        )  # fmt: skip
        return event
