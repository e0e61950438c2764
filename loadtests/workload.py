"""The shape of the simulated traffic, kept apart from locust so it reads (and tests) on its own.

- :class:`Population`: user ids drawn from a Zipf law over ranks, so a few users are very
  active and most come rarely, as on a real site.
- :func:`parse_mix`: the ``--mix`` option (``"session=8,reload=2,burst=1"``), the relative
  weights of the session user's tasks.
- :class:`Pacer`: request slots at a constant offered rate, shared by the simulated users of
  one locust process (the rate-controlled mode, ``--rate``).
- :class:`Tally`: what the load test did that the checks after it need: events the API
  accepted (its 202 ``accepted`` counts), the users they belong to, freshness samples, rounds.
  It is written to the summary file, which ``run.py`` and the CI smoke test read.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

TASKS = ("session", "reload", "burst")


class Population:
    """``size`` user ids ``<prefix>-u<rank>``, rank r drawn with probability ~ 1 / r**s.

    ``s`` around 1 is the classic Zipf law of web traffic: with 10,000 users and s = 1.1, the
    top 1% of users make about half of the sessions.
    """

    def __init__(self, size: int, s: float, prefix: str) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"--population must be a positive number of users, got {size!r}")
        if not (isinstance(s, int | float) and math.isfinite(s) and s >= 0):
            raise ValueError(f"--zipf must be a finite exponent >= 0, got {s!r}")
        if not prefix or "/" in prefix or len(prefix) > 64:
            raise ValueError(f"--user-prefix must be 1..64 characters without '/', got {prefix!r}")
        self.size = size
        self.s = s
        self.prefix = prefix
        self._cum = list(itertools.accumulate(1.0 / r**s for r in range(1, size + 1)))
        self._ranks = range(1, size + 1)

    def user(self, rank: int) -> str:
        return f"{self.prefix}-u{rank}"

    def draw(self, rng: random.Random) -> str:
        return self.user(rng.choices(self._ranks, cum_weights=self._cum)[0])

    def share_of_top(self, fraction: float) -> float:
        """The share of draws that land on the top ``fraction`` of users (for the report)."""
        top = max(1, int(self.size * fraction))
        return self._cum[top - 1] / self._cum[-1]


def parse_mix(text: str) -> dict[str, int]:
    """``"session=8,reload=2,burst=1"`` -> weights; unnamed tasks get 0, all zero is refused."""
    weights = dict.fromkeys(TASKS, 0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in weights:
            raise ValueError(
                f"--mix entry {part!r} must be NAME=WEIGHT with NAME one of {', '.join(TASKS)}"
            )
        try:
            weight = int(value)
        except ValueError:
            weight = -1
        if weight < 0:
            raise ValueError(f"--mix weight of {name!r} must be an integer >= 0, got {value!r}")
        weights[name] = weight
    if not any(weights.values()):
        raise ValueError(f"--mix {text!r} gives every task weight 0; give one a positive weight")
    return weights


class Pacer:
    """Slots for requests at ``rate`` per second, shared by every simulated user of a process.

    A user about to send a request takes the next free slot and sleeps until it: requests go
    out at the offered rate whatever the answers' latencies, as long as enough users are free
    to take the slots (open-loop load, bounded by the number of users). A slot nobody took in
    time is not made up later (no burst to catch up), so when the service slows down the
    achieved rate falls below the offered one: the sign of saturation the ramp looks for.

    locust's ``constant_throughput`` paces a user's *tasks*, and a session task makes a varying
    number of requests; one schedule per process paces the requests themselves. Greenlets switch
    only where they wait, so :meth:`delay` needs no lock.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(
                f"--rate must be a positive number of requests per second, got {rate!r}"
            )
        self.interval = 1.0 / rate
        self._clock = clock
        self._next: float | None = None

    def delay(self) -> float:
        """Take the next slot: the seconds to wait before sending (0 when it is already due)."""
        now = self._clock()
        slot = now if self._next is None else max(now, self._next)
        self._next = slot + self.interval
        return slot - now


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by linear interpolation, ``None`` for no values."""
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return data[low] + (data[high] - data[low]) * (pos - low)


@dataclass
class Tally:
    """Counts kept by the load test (one locust process; greenlets share it under a lock)."""

    prefix: str
    accepted: int = 0
    duplicates: int = 0
    sent: int = 0
    attempted: int = 0  # events in every POST /v1/events sent, answered or not
    paced: int = 0  # requests of the session users sent on the pacer's slots (--rate)
    paced_first: float | None = None  # when the first and the last of them were answered
    paced_last: float | None = None
    users: set[str] = field(default_factory=set)
    freshness_ms: list[float] = field(default_factory=list)
    # The probe's lower bounds: a poll sent after this still did not show the event.
    freshness_low_ms: list[float] = field(default_factory=list)
    freshness_timeouts: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def events_answered(self, user: str, sent: int, answer: Any) -> None:
        """Record a 202 answer ``{"accepted", "duplicates"}`` to ``sent`` events of ``user``."""
        with self._lock:
            self.sent += sent
            self.accepted += int(answer["accepted"])
            self.duplicates += int(answer["duplicates"])
            self.users.add(user)

    def request_paced(self, now: float) -> None:
        """Count one answered (or failed) request of a paced session user."""
        self.paced += 1
        if self.paced_first is None:
            self.paced_first = now
        self.paced_last = now

    def paced_rate(self) -> float | None:
        """Requests per second the paced users achieved, between their first and last answers."""
        if self.paced < 2 or self.paced_first is None or self.paced_last is None:
            return None
        return (self.paced - 1) / max(self.paced_last - self.paced_first, 1e-9)

    def summary(self, **extra: Any) -> dict[str, Any]:
        fresh = self.freshness_ms
        return {
            "user_prefix": self.prefix,
            "events_sent": self.sent,
            "events_attempted": self.attempted,
            "paced_requests": self.paced,
            "paced_seconds": (self.paced_last or 0.0) - (self.paced_first or 0.0),
            "paced_rps": self.paced_rate(),
            "events_accepted": self.accepted,
            "events_duplicates": self.duplicates,
            # Our event ids are unique, so a duplicate is a resent batch the server already
            # held: what the service must have applied is accepted + duplicates.
            "events_held": self.accepted + self.duplicates,
            "users": sorted(self.users),
            "freshness": {
                "samples": len(fresh),
                "timeouts": self.freshness_timeouts,
                "p50_ms": percentile(fresh, 0.50),
                "p99_ms": percentile(fresh, 0.99),
                "max_ms": max(fresh) if fresh else None,
                "in_order_ms": [round(ms, 1) for ms in fresh],  # to tell a cold start from a tail
                "low_p50_ms": percentile(self.freshness_low_ms, 0.50),
                "low_p99_ms": percentile(self.freshness_low_ms, 0.99),
            },
            "rounds": self.rounds,
            **extra,
        }


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON, atomically (a temp file in the same folder, then a rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    os.replace(tmp, target)
