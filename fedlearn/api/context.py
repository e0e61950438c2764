"""What the routes share, kept on the app (``app.extensions["fedlearn"]``), never in globals."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from fedlearn.config import Settings
from fedlearn.serving.base_cache import BaseCache
from fedlearn.store import Store
from fedlearn.store.ratelimit import RateLimiter
from fedlearn.store.revocations import Revocations
from fedlearn.telemetry.api import Metrics

EXTENSION = "fedlearn"


class BlobCache:
    """The bytes of the last few base versions served, so a base is read from Redis once.

    Versions are immutable, so an entry never goes stale; it only makes room (LRU).
    """

    def __init__(self, store: Store, keep: int) -> None:
        self._store = store
        self._keep = keep
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str) -> bytes:
        """The ``.flfm`` bytes of ``version``; ``UnknownVersionError`` if never published."""
        with self._lock:
            blob = self._blobs.get(version)
            if blob is not None:
                self._blobs.move_to_end(version)
                return blob
        blob = self._store.bases.get_base(version)
        with self._lock:
            self._blobs[version] = blob
            while len(self._blobs) > self._keep:
                self._blobs.popitem(last=False)
        return blob


@dataclass
class ApiContext:
    """The settings, the store, this process's caches of bases, and its metrics; the users'
    rate limits and token revocations (in Redis, shared by every process)."""

    settings: Settings
    store: Store
    bases: BaseCache
    blobs: BlobCache
    metrics: Metrics
    limits: RateLimiter
    revocations: Revocations
    cache: dict[str, Any] = field(default_factory=dict)  # e.g. the built OpenAPI document


def api_context() -> ApiContext:
    """The context of the app handling the current request."""
    return current_app.extensions[EXTENSION]
