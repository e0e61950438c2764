"""The latest off-policy estimate the dashboard shows: the served policy's top-slot click
rate and greedy's estimate, as the beat task last computed them (``jobs.tasks``).

One JSON string under ``keys.ope_served_greedy``: whichever Celery worker computed it, the
API's dashboard and ``/metrics`` read the same value. Each write replaces the last; nothing
accumulates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from fedlearn.store import keys


class OpeEstimates:
    """Read and replace the dashboard's served-vs-greedy estimate."""

    def __init__(self, client: Any) -> None:
        self._r = client

    def put(self, result: Mapping[str, Any]) -> None:
        """Replace the stored estimate by ``result`` (a JSON-ready mapping)."""
        if not isinstance(result, Mapping):
            raise TypeError(f"the estimate must be a mapping, got {type(result).__name__}")
        self._r.set(keys.ope_served_greedy(), orjson.dumps(result))

    def latest(self) -> dict[str, Any] | None:
        """The stored estimate, None before the first one."""
        raw = self._r.get(keys.ope_served_greedy())
        return None if raw is None else orjson.loads(raw)
