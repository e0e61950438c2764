"""Base model versions: immutable blobs, one pointer to the current one, and their history.

A version, once published, never changes (its URL is served ``Cache-Control: immutable``), so
``put_base`` refuses to overwrite it; publishing the same bytes again is a no-op, which makes a
retried publish harmless. Making a version current and rolling back are the same pointer move.
All keys carry the ``{base}`` tag: publish + history append is one atomic script on a cluster.

Retention (``aggregate/retention.py``) deletes the bytes of versions nothing needs any more
(``prune``); their history entry stays and their id is never published again, so a fetch of
one says it was pruned (``PrunedVersionError``) instead of "never published".
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from fedlearn.store import keys
from fedlearn.store.errors import (
    PrunedVersionError,
    UnknownVersionError,
    VersionConflictError,
    VersionExistsError,
    VersionInUseError,
)
from fedlearn.store.scripts import Scripts

_ANY: Any = object()  # set_current's "do not check the current version"


@dataclass(frozen=True, slots=True)
class BaseInfo:
    """One published version as the history records it."""

    version: str
    meta: dict[str, Any]
    created_at: float


class Bases:
    """Publish, read and point at base versions."""

    def __init__(self, client: Any, scripts: Scripts) -> None:
        self._r = client
        self._scripts = scripts

    def put_base(self, version: str, blob: bytes, meta: Mapping[str, Any] | None = None) -> bool:
        """Publish ``blob`` as ``version``; True when new, False when these exact bytes were
        already published. Raises ``VersionExistsError`` for different bytes. Does not make
        the version current (``set_current`` does)."""
        keys.check_version(version)
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise TypeError(f"base {version!r}: blob must be bytes, got {type(blob).__name__}")
        if not len(blob):
            raise ValueError(f"base {version!r}: blob is empty; pass the .flfm bytes")
        meta = dict(meta or {})
        try:
            entry = orjson.dumps({"version": version, "meta": meta, "created_at": time.time()})
        except TypeError as exc:
            raise ValueError(f"base {version!r}: meta must be JSON-serializable: {exc}") from exc
        status = self._scripts.put_base(
            keys=[keys.base_blob(version), keys.base_history(), keys.base_pruned()],
            args=[bytes(blob), entry, version],
        )
        if status == b"EXISTS":
            raise VersionExistsError(version)
        if status == b"PRUNED":
            raise self._missing(version)
        return status == b"OK"

    def get_base(self, version: str) -> bytes:
        """The bytes of ``version``; ``UnknownVersionError`` if it was never published,
        ``PrunedVersionError`` (a subclass) if retention deleted them."""
        keys.check_version(version)
        blob = self._r.get(keys.base_blob(version))
        if blob is None:
            raise self._missing(version)
        return blob

    def _missing(self, version: str) -> UnknownVersionError:
        """Why ``version`` has no bytes: pruned (and when), or never published."""
        pruned_at = self._r.hget(keys.base_pruned(), version)
        if pruned_at is None:
            return UnknownVersionError(version)
        return PrunedVersionError(version, float(pruned_at))

    def prune(self, version: str) -> bool:
        """Delete the bytes of ``version`` (its history entry stays); True when this call
        deleted them, False when they were pruned before. ``VersionInUseError`` if it is
        current (checked in the same step), ``UnknownVersionError`` if never published."""
        keys.check_version(version)
        status = self._scripts.prune_base(
            keys=[keys.base_blob(version), keys.base_current(), keys.base_pruned()],
            args=[version, repr(time.time())],
        )
        if status == b"CURRENT":
            raise VersionInUseError(version)
        if status == b"ABSENT":
            missing = self._missing(version)
            if isinstance(missing, PrunedVersionError):
                return False
            raise missing
        return True

    def pruned(self) -> dict[str, float]:
        """Versions whose bytes were pruned, with the unix time of it."""
        return {v.decode("utf-8"): float(t) for v, t in self._r.hgetall(keys.base_pruned()).items()}

    def exists(self, version: str) -> bool:
        keys.check_version(version)
        return bool(self._r.exists(keys.base_blob(version)))

    def size(self, version: str) -> int:
        """Bytes of ``version``'s blob (0 when it has none): what pruning it frees."""
        keys.check_version(version)
        return int(self._r.strlen(keys.base_blob(version)))

    def current_version(self) -> str | None:
        """The current version id, ``None`` before the first ``set_current``."""
        raw = self._r.get(keys.base_current())
        return None if raw is None else raw.decode("utf-8")

    def set_current(self, version: str, *, expected: str | None = _ANY) -> str | None:
        """Point ``current`` at the published ``version``; returns the previous one.

        With ``expected``, move only if the current version is still ``expected`` (``None``:
        only if there is none yet); otherwise ``VersionConflictError``. A reducer that built
        v+1 from v passes ``expected=v`` so two concurrent rounds cannot both publish.
        """
        keys.check_version(version)
        if expected is _ANY:
            check, want = "0", ""
        elif expected is None:
            check, want = "2", ""
        else:
            keys.check_version(expected)
            check, want = "1", expected
        reply = self._scripts.set_current(
            keys=[keys.base_blob(version), keys.base_current()], args=[version, check, want]
        )
        status = reply[0]
        if status == b"UNKNOWN":
            raise self._missing(version)
        actual = reply[1].decode("utf-8") if len(reply) > 1 and reply[1] else None
        if status == b"CONFLICT":
            raise VersionConflictError(version, None if expected is _ANY else expected, actual)
        return actual

    def rollback(self, version: str) -> str | None:
        """Make an earlier published ``version`` current again; returns the one replaced.

        The same pointer move as ``set_current``, named for what an operator means by it.
        """
        return self.set_current(version)

    def history(self) -> list[BaseInfo]:
        """Published versions in publishing order, with their meta."""
        return [
            BaseInfo(d["version"], d["meta"], d["created_at"])
            for d in map(orjson.loads, self._r.lrange(keys.base_history(), 0, -1))
        ]

    def meta(self, version: str) -> dict[str, Any]:
        """The meta ``version`` was published with."""
        keys.check_version(version)
        for info in reversed(self.history()):
            if info.version == version:
                return info.meta
        raise UnknownVersionError(version)
