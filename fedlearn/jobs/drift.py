"""What a drift event makes happen, as the operator configured it.

- An aggregation round started early (``drift_early_round``): at most one per
  ``drift_early_round_min_s`` across all trainers (a ``SET NX PX`` claim in Redis), not while
  another round holds the round lock; the round is recorded with ``trigger="drift"`` and sent
  by task name like the beat schedule's, and ``begin_round`` takes the one round lock, so a
  round that raced another is rejected as any second round is.
- A retrain (``drift_retrain``) when drift persists: ``drift_retrain_events`` drift events
  within ``drift_retrain_window_s``; ``propose`` records the proposal (and counts it),
  ``start`` sends the monthly retrain task; one per window.

The trainer's monitor writes what this returns into the drift event's own record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fedlearn.aggregate import run
from fedlearn.aggregate.config import AggregationConfig
from fedlearn.config import Settings
from fedlearn.jobs.app import MONTHLY, START_ROUND, make_celery
from fedlearn.store import Store
from fedlearn.store.drift import DriftEvent
from fedlearn.telemetry.trainer import DRIFT_ACTIONS

Send = Callable[[str, list[Any]], Any]  # (task name, args): Celery's send_task


class DriftActions:
    """Acts on drift events for ``store``'s service; ``send`` sends a task by name."""

    def __init__(self, store: Store, settings: Settings, send: Send | None = None) -> None:
        self.store = store
        self.settings = settings
        self._send = send

    def send(self, task: str, args: list[Any]) -> None:
        if self._send is None:  # made on first use: most trainers never see drift
            celery = make_celery(self.settings)
            self._send = lambda name, a: celery.send_task(name, args=a)
        self._send(task, args)

    def __call__(self, event: DriftEvent) -> dict[str, Any]:
        done: dict[str, Any] = {}
        if self.settings.drift_early_round:
            done["early_round"] = self.early_round()
        if self.settings.drift_retrain != "off":
            retrain = self.retrain(event)
            if retrain is not None:
                done["retrain"] = retrain
        return done

    def early_round(self) -> dict[str, Any]:
        if not self.store.drift.claim("early_round", self.settings.drift_early_round_min_s):
            return {"outcome": "throttled"}
        holder = self.store.rounds.lock_holder()
        if holder is not None:
            return {"outcome": "round_running", "round": holder}
        config = AggregationConfig.from_settings(self.settings)
        round_id = run.create_round(self.store.rounds, config, trigger="drift")
        self.send(START_ROUND, [round_id])
        DRIFT_ACTIONS.labels(action="early_round").inc()
        return {"outcome": "started", "round": round_id}

    def retrain(self, event: DriftEvent) -> dict[str, Any] | None:
        """None while drift has not persisted (the event itself counts)."""
        window = self.settings.drift_retrain_window_s
        needed = self.settings.drift_retrain_events
        recent = self.store.drift.count_since(event.at - window, most=needed) + 1
        if recent < needed:
            return None
        if not self.store.drift.claim("retrain", window):
            return {"outcome": "throttled", "recent": recent}
        if self.settings.drift_retrain == "start":
            self.send(MONTHLY, [])
            DRIFT_ACTIONS.labels(action="retrain_started").inc()
            return {"outcome": "started", "recent": recent, "at": time.time()}
        DRIFT_ACTIONS.labels(action="retrain_proposed").inc()
        return {"outcome": "proposed", "recent": recent, "window_s": window}
