"""Drift events: what the trainers' detectors raised, and the actions each one caused.

One bounded stream (``keys.drift_events``, ``MAXLEN ~``) holds every event as one JSON field,
with the actions it caused written in the same entry, so an operator reads an action beside
its cause. The throttles of the actions (an early round at most once per interval, a retrain
proposal at most once per window) are keys that exist while the action may not run again:
``SET NX PX`` makes the claim atomic across every trainer.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from fedlearn.store import keys
from fedlearn.store.entries import decode_id

SIGNALS = ("clone_loss", "base_loss", "click_rate", "unseen_share")
ACTIONS = ("early_round", "retrain")
MAX_LIST = 1000
_FIELD = b"d"


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """A change a detector found in ``signal``, over ``shard`` (None: all the trainer's).

    ``before`` and ``after`` are the signal's mean in the detector's window before and after
    the change, ``magnitude = after - before``; ``events`` is how many events the detector had
    seen when it fired. ``actions`` are what was done about it (filled by the trainer's
    monitor); ``id`` is its id in the stream once written.
    """

    signal: str
    shard: int | None
    before: float
    after: float
    events: int
    trainer: str = ""
    at: float = field(default_factory=time.time)
    actions: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"drift signal must be one of {SIGNALS}, got {self.signal!r}")

    @property
    def magnitude(self) -> float:
        return self.after - self.before

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "magnitude": self.magnitude}


def _parse(entry_id: bytes | str, fields: dict[bytes, bytes]) -> DriftEvent:
    data = orjson.loads(fields[_FIELD])
    data.pop("magnitude", None)
    data["id"] = decode_id(entry_id)
    return DriftEvent(**data)


class DriftLog:
    """The drift events stream and the actions' throttles."""

    def __init__(self, client: Any, *, maxlen: int = 10_000) -> None:
        if not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 1:
            raise ValueError(f"drift events maxlen must be a positive int, got {maxlen!r}")
        self._r = client
        self.maxlen = maxlen

    def record(self, event: DriftEvent) -> str:
        """Append ``event`` (the oldest are trimmed beyond ``maxlen``); returns its id."""
        payload = orjson.dumps(event.to_json(), option=orjson.OPT_SERIALIZE_NUMPY)
        entry_id = self._r.xadd(
            keys.drift_events(), {_FIELD: payload}, maxlen=self.maxlen, approximate=True
        )
        return decode_id(entry_id)

    def latest(self, *, limit: int = 100, since: float | None = None) -> list[DriftEvent]:
        """The newest ``limit`` events (newest first), only those after ``since`` (epoch s)."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST:
            raise ValueError(f"limit must be an int in 1..{MAX_LIST}, got {limit!r}")
        low = "-" if since is None else f"{int(since * 1000)}-0"
        reply = self._r.xrevrange(keys.drift_events(), max="+", min=low, count=limit)
        return [_parse(entry_id, fields) for entry_id, fields in reply]

    def count_since(self, since: float, *, most: int = MAX_LIST) -> int:
        """How many events were recorded after ``since`` (epoch seconds), counting to ``most``."""
        reply = self._r.xrange(keys.drift_events(), min=f"{int(since * 1000)}-0", count=most)
        return len(reply)

    def claim(self, action: str, ttl_s: float) -> bool:
        """True (and the claim held for ``ttl_s``) unless ``action`` was claimed less than
        its ``ttl_s`` ago, by any trainer."""
        if action not in ACTIONS:
            raise ValueError(f"drift action must be one of {ACTIONS}, got {action!r}")
        if not ttl_s > 0:
            raise ValueError(f"the throttle of {action} must be > 0 s, got {ttl_s!r}")
        return bool(self._r.set(keys.drift_gate(action), b"1", nx=True, px=int(ttl_s * 1000)))
