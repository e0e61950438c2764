"""The current base, as a process sees it: loaded from the store once per version.

Bases are immutable, so a version once decoded is kept; only the pointer is re-read, at most
every ``refresh_s`` seconds, which bounds how long a process keeps serving an older base after
a round publishes a new one.
"""

from __future__ import annotations

import threading
import time

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


class BaseCache:
    """Decoded bases by version (a few at most), and the current pointer, re-read lazily."""

    def __init__(self, store: Store, *, refresh_s: float = 1.0, keep: int = 4) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.keep = keep
        self._bases: dict[str, Base] = {}
        self._current: str | None = None
        self._checked = -float("inf")
        self._buckets: dict[tuple[str, int], BucketIndex] = {}
        self._building = threading.Lock()

    def get(self, version: str) -> Base:
        """The base ``version`` (``UnknownVersionError`` if never published)."""
        base = self._bases.get(version)
        if base is None:
            base = Base.from_bytes(self.store.bases.get_base(version))
            self._bases[version] = base
            while len(self._bases) > self.keep:
                self._bases.pop(next(iter(self._bases)))
        return base

    def bucket_index(self, version: str, n_buckets: int) -> BucketIndex:
        """The rows of ``version`` grouped in ``n_buckets`` buckets, built once (one pass over
        the base) and kept like the decoded bases: a bucket request slices it, never scans."""
        index = self._buckets.get((version, n_buckets))
        if index is None:
            # One build at a time: the first sessions after a publish arrive together, and
            # each build is a second of CPU at a million rows; the others then find it built.
            with self._building:
                index = self._buckets.get((version, n_buckets))
                if index is None:
                    index = BucketIndex(self.get(version), n_buckets)
                    self._buckets[(version, n_buckets)] = index
                    while len(self._buckets) > self.keep:
                        self._buckets.pop(next(iter(self._buckets)))
        return index

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
