"""The current base, as a process sees it: loaded from the store once per version.

Bases are immutable, so a version once decoded is kept; only the pointer is re-read, at most
every ``refresh_s`` seconds, which bounds how long a process keeps serving an older base after
a round publishes a new one.

gunicorn's gthread workers share one cache between threads: the caches are LRU
``OrderedDict``s changed only under a lock (an eviction that iterated a plain dict while
another thread inserted failed with ``RuntimeError``, or two evicted the same key), and a
version is loaded by one thread while the others wait for it, not read and decoded by each.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import TypeVar

from fedlearn.model import Base
from fedlearn.model.rowset import BucketIndex
from fedlearn.store import Store

# How to get a first base, named wherever its absence is reported (API, trainer, `up`).
PUBLISH_HINT = (
    "train one with `fedlearn train-base DIR --out base.flfm` and publish it with "
    "`fedlearn base publish base.flfm`, or start the service with `fedlearn up --demo`"
)


class NoBaseError(RuntimeError):
    """No base has been published yet."""

    def __init__(self) -> None:
        super().__init__(f"no base model is published yet: {PUBLISH_HINT}")


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BaseCache:
    """Decoded bases by version (a few at most, least recently used out first), their bucket
    indexes, and the current pointer, re-read lazily. Safe to share between threads."""

    def __init__(self, store: Store, *, refresh_s: float = 1.0, keep: int = 4) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.keep = keep
        self._bases: OrderedDict[str, Base] = OrderedDict()
        self._current: str | None = None
        self._checked = -float("inf")
        self._buckets: OrderedDict[tuple[str, int], BucketIndex] = OrderedDict()
        self._lock = threading.Lock()  # held only to look up, insert and evict
        # One load at a time: the first sessions after a publish arrive together, and a base
        # is 56 MB to read and decode and its index a second of CPU at a million rows; the
        # others wait and find it loaded. Re-entrant: an index build loads its base.
        self._loading = threading.RLock()
        # The base last served as current (``serving.clones.load_clone``): a user's one read
        # asks for the rebase notes its lineage lists, the likeliest to be the current one's.
        self.served: Base | None = None

    def get(self, version: str) -> Base:
        """The base ``version`` (``UnknownVersionError`` if never published)."""
        base = self._cached(self._bases, version)
        if base is None:
            with self._loading:
                base = self._cached(self._bases, version)
                if base is None:
                    base = Base.from_bytes(self.store.bases.get_base(version))
                    self._remember(self._bases, version, base)
        return base

    def bucket_index(self, version: str, n_buckets: int) -> BucketIndex:
        """The rows of ``version`` grouped in ``n_buckets`` buckets, built once (one pass over
        the base) and kept like the decoded bases: a bucket request slices it, never scans."""
        key = (version, n_buckets)
        index = self._cached(self._buckets, key)
        if index is None:
            with self._loading:
                index = self._cached(self._buckets, key)
                if index is None:
                    index = BucketIndex(self.get(version), n_buckets)
                    self._remember(self._buckets, key, index)
        return index

    def _cached(self, cache: OrderedDict[K, V], key: K) -> V | None:
        with self._lock:
            value = cache.get(key)
            if value is not None:
                cache.move_to_end(key)
            return value

    def _remember(self, cache: OrderedDict[K, V], key: K, value: V) -> None:
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > self.keep:
                cache.popitem(last=False)

    def current(self) -> Base:
        """The current base; raises :class:`NoBaseError` before the first is published."""
        now = time.monotonic()
        if self._current is None or now - self._checked >= self.refresh_s:
            self._current = self.store.bases.current_version()
            self._checked = now
        if self._current is None:
            raise NoBaseError()
        return self.get(self._current)

    def generation(self, base: Base) -> int:
        """The generation of ``base`` (monthly retraining starts a new one)."""
        return int(base.meta.get("generation", 0))
