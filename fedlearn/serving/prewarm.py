"""Pre-warming: load and index a newly published base before its first session asks for it.

Without it, the first session after a publish pays for what every process does once per
version: read and decode the base and build its bucket index (about 1.4 s at a million
items). Each API worker process (``api/server.py``) runs one daemon thread that reads the
current pointer every ``FEDLEARN_BASE_PREWARM_EVERY_S`` and, when it names a version it has
not warmed, does both through the process's ``BaseCache``. A session that arrives while the
warm-up runs waits for it (``BaseCache`` loads one thing at a time) instead of doing it again.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

from fedlearn.model import Base
from fedlearn.serving.base_cache import BaseCache

log = logging.getLogger(__name__)


class BaseWarmer:
    """A thread that warms ``cache`` with every new current version. It holds the cache
    weakly, and ends when the cache is gone (an app a test dropped) or on :meth:`stop`."""

    def __init__(
        self, cache: BaseCache, n_buckets_of: Callable[[Base], int], *, every_s: float
    ) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0 seconds, got {every_s!r}")
        self._cache = weakref.ref(cache)
        self._n_buckets_of = n_buckets_of
        self.every_s = every_s
        self.warmed: str | None = None  # the last version warmed
        self._stop = threading.Event()
        self._last_error = ""
        self._thread = threading.Thread(target=self._run, name="fedlearn-base-warmer", daemon=True)

    def start(self) -> BaseWarmer:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def warm_once(self) -> str | None:
        """Load and index the current version if it is new to this warmer; returns it (None
        when there was nothing to do)."""
        cache = self._cache()
        if cache is None:
            self._stop.set()
            return None
        version = cache.store.bases.current_version()
        if version is None or version == self.warmed:
            return None
        cache.bucket_index(version, self._n_buckets_of(cache.get(version)))
        self.warmed = version
        log.info("base %s loaded and indexed ahead of its first session", version)
        return version

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.warm_once()
            except Exception as exc:  # Redis down, a version pruned meanwhile: next tick
                # Said once per distinct failure, not every tick; sessions load what they
                # need themselves meanwhile, so serving does not depend on this thread.
                if str(exc) != self._last_error:
                    log.warning("base pre-warm failed (retrying every %s s): %s", self.every_s, exc)
                self._last_error = str(exc)
