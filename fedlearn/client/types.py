"""The client's values: an event to send, a session (the user's model), a ranking."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from fedlearn.model import Base

Signal = Literal["click", "skip"]


@dataclass(frozen=True)
class Event:
    """One impression's outcome. ``event_id`` is made once, here, so every retry of the
    event carries the same id and the server counts it once."""

    user: str
    item: str
    signal: Signal
    ts: float = field(default_factory=time.time)
    context: dict[str, Any] | None = None
    prediction_id: str | None = None
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # How the item was shown, when the caller ranked it itself (a server ranking's record,
    # named by prediction_id, says it for the caller): sent together or not at all.
    propensity: float | None = None
    slot: int | None = None
    policy: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "user": self.user,
            "item": self.item,
            "signal": self.signal,
            "ts": self.ts,
        }
        if self.context is not None:
            out["context"] = self.context
        for name in ("prediction_id", "propensity", "slot", "policy"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class Session:
    """A user's session start: their model (``GET /v1/users/{user}/model``) and its base."""

    user: str
    model: dict[str, Any]  # the server's UserModel: delta, learning rates, serve
    base: Base
    base_downloaded: bool  # False when the cached copy was still current (a 304)

    @property
    def base_version(self) -> str:
        return str(self.model["base_version"])

    @property
    def events_applied(self) -> int:
        return int(self.model["events_applied"])


@dataclass(frozen=True)
class Ranking:
    """``POST /v1/users/{user}/rank``: items in slot order (best first under greedy), and the
    id to send back with events."""

    prediction_id: str
    base_version: str
    items: list[tuple[str, float]]  # (item id, click probability)
    # The probability that the policy put each item in its slot (1 under greedy).
    propensities: list[float] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=lambda: {"kind": "greedy"})
