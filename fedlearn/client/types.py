"""The client's values: an event to send, a session (the user's model), a ranking."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fedlearn.client.local import candidates, rank_locally
from fedlearn.model import Base
from fedlearn.model.rowset import PartialBase

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


@dataclass
class Session:
    """A user's session start: their model (``GET /v1/users/{user}/model``) and its base,
    whole or partial (the rows of the buckets fetched so far). ``Client.prepare`` moves a
    partial session to the current model and base when its version was pruned."""

    user: str
    model: dict[str, Any]  # the server's UserModel: delta, learning rates, serve
    base: Base | PartialBase
    base_downloaded: bool  # False when the cached copy was still current (a 304)

    def rank_locally(
        self,
        items: Iterable[str | Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> list[tuple[str, float]]:
        """Score ``items`` here, with the clone the server serves, best first: the scores of
        ``POST /v1/users/{user}/rank`` for the same items and context. A partial base raises
        ``MissingRowsError`` for rows it has not fetched (``Client.prepare`` fetches them)."""
        return rank_locally(self.user, self.model, self.base, candidates(items), context)

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
