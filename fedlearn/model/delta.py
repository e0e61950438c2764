"""A user's delta: the sparse difference between the user's clone and the shared base.

Only rows the user touched are stored, so a clone costs kilobytes, not a model copy. The
binary form (``.fldl``, see ``docs/CONTRACTS.md``) is what Redis keeps; the JSON form is what
``GET /v1/users/{user}/model`` sends to clients.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Collection, Iterable
from typing import Any, NamedTuple

import numpy as np

from fedlearn.model.errors import ModelFormatError
from fedlearn.model.fm import MAX_DELTA

MAGIC = b"FLDL"
FORMAT = 2  # 2 added the CRC-32 trailer; format 1 (without it) is still read
_HEAD = struct.Struct("<4sIIIdQI")
_CRC = struct.Struct("<I")
MAX_FACTORS = 1024  # far above any useful k; only there to refuse a garbled header early
# The row cap's default (FEDLEARN_CLONE_MAX_ROWS): a MovieLens-1M user rated at most 2,314
# films, so a real user's delta (items, genres, a few context values) stays below it, while a
# user sending a new context string with every event is held to ~0.2 MB at k = 10.
DEFAULT_MAX_ROWS = 4096
# A rebased row (``rebase``) whose every parameter is at most this far from zero is dropped.
# Deltas are stored as float32, whose resolution near the largest delta values (MAX_DELTA =
# 16) is about 1e-6: a row within it of zero is zero up to the storage's own rounding.
REBASE_TOLERANCE = 1e-6
# After a rebase, any row whose every parameter is below this in size is dropped too (issue 11:
# most of a MovieLens delta is small item rows of films the user will not see again; dropping
# rows under 0.01 after each round shrinks deltas by a third there and by an eighth on the
# synthetic log with repeats, at no AUC measurable to 1e-4 on rolling folds of the first 30 %).
PRUNE_BELOW = 0.01


class Delta:
    """Sparse per-user rows ``w`` ``(m,)`` and ``v`` ``(m, k)``, plus the intercept ``w0``.

    ``dtype`` is the storage type of the rows: float32 (the default, what the wire carries) or
    float64 (for exact comparisons with a float64 reference).
    """

    __slots__ = ("_v", "_w", "dtype", "index", "n_events", "n_factors", "names", "w0")

    def __init__(self, n_factors: int, *, dtype: type = np.float32) -> None:
        self.n_factors = int(n_factors)
        self.dtype = np.dtype(dtype)
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.w0 = 0.0
        self.n_events = 0
        self._w = np.zeros(4, dtype=self.dtype)
        self._v = np.zeros((4, self.n_factors), dtype=self.dtype)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def w(self) -> np.ndarray:
        return self._w[: len(self.names)]

    @property
    def v(self) -> np.ndarray:
        return self._v[: len(self.names)]

    def rows_of(self, names: Iterable[str]) -> np.ndarray:
        """Row numbers of ``names``, adding zero rows for names not yet in the delta."""
        index = self.index
        out = []
        for name in names:
            row = index.get(name)
            if row is None:
                row = index[name] = len(self.names)
                self.names.append(name)
            out.append(row)
        self._reserve(len(self.names))
        return np.asarray(out, dtype=np.int64)

    def lookup(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Delta weights ``(m,)`` and latents ``(m, k)`` (float64) of ``names``; 0 if absent."""
        w = np.zeros(len(names))
        v = np.zeros((len(names), self.n_factors))
        for i, name in enumerate(names):
            row = self.index.get(name)
            if row is not None:
                w[i] = self._w[row]
                v[i] = self._v[row]
        return w, v

    def _reserve(self, m: int) -> None:
        capacity = len(self._w)
        if m <= capacity:
            return
        new = max(m, 2 * capacity)
        w = np.zeros(new, dtype=self.dtype)
        v = np.zeros((new, self.n_factors), dtype=self.dtype)
        w[:capacity] = self._w
        v[:capacity] = self._v
        self._w, self._v = w, v

    def copy(self) -> Delta:
        other = Delta(self.n_factors, dtype=self.dtype)
        other.names = list(self.names)
        other.index = dict(self.index)
        other.w0 = self.w0
        other.n_events = self.n_events
        other._w = self._w.copy()
        other._v = self._v.copy()
        return other

    # -- recency and the row cap ----------------------------------------------------------

    def touch(self, names: Iterable[str]) -> None:
        """Mark ``names`` (rows of this delta) as used now, in this order (the last is newest).

        ``index`` keeps its keys in recency order, least recently used first; that order is
        what :meth:`evict` drops from and what the binary and JSON forms store.
        """
        index = self.index
        for name in names:
            index[name] = index.pop(name)

    def evict(self, max_rows: int) -> int:
        """Drop the least recently used rows beyond ``max_rows``; returns how many went.

        A dropped row is zero delta: the clone falls back to the base's value there.
        """
        excess = len(self.names) - max_rows
        if excess <= 0:
            return 0
        keep = list(self.index)[excess:]
        rows = np.fromiter((self.index[name] for name in keep), np.int64, len(keep))
        self._w, self._v = self._w[rows], self._v[rows]
        self.names = keep
        self.index = {name: row for row, name in enumerate(keep)}
        return excess

    def drop(self, names: Iterable[str]) -> None:
        """Remove rows ``names`` (those present), keeping the others' recency order."""
        gone = set(names)
        keep = [n for n in self.index if n not in gone]
        rows = np.fromiter((self.index[n] for n in keep), np.int64, len(keep))
        self._w, self._v = self._w[rows], self._v[rows]
        self.names = keep
        self.index = {name: row for row, name in enumerate(keep)}

    def _recency_order(self) -> tuple[list[str], np.ndarray]:
        names = list(self.index)
        return names, np.fromiter(self.index.values(), np.int64, len(names))

    def is_finite(self) -> bool:
        """Whether every parameter is a finite number (a clone must never store NaN or inf)."""
        return bool(
            math.isfinite(self.w0) and np.isfinite(self.w).all() and np.isfinite(self.v).all()
        )

    # -- formats --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The ``.fldl`` bytes (CONTRACTS.md), rows in recency order, with a CRC-32 trailer."""
        order, rows = self._recency_order()
        w, v = self._w[rows].astype("<f4").tobytes(), self._v[rows].astype("<f4").tobytes()
        return pack_delta(order, self.n_factors, self.w0, self.n_events, w, v)

    @classmethod
    def from_bytes(cls, blob: bytes, *, dtype: type = np.float32) -> Delta:
        """Decode ``.fldl`` bytes (format 1 or 2); :class:`ModelFormatError` if malformed.

        Every size is checked against ``len(blob)`` before anything is allocated, so a forged
        header cannot make this reserve more memory than the blob itself justifies.
        """
        names, w, v, w0, n_events = decode_rows(blob)
        k = v.shape[1]
        delta = cls(k, dtype=dtype)
        delta.names = names
        delta.index = {name: row for row, name in enumerate(names)}
        delta.w0 = w0
        delta.n_events = n_events
        delta._w = w.astype(delta.dtype)
        delta._v = v.astype(delta.dtype)
        return delta

    @classmethod
    def from_rows(
        cls, n_factors: int, names: list[str], w: np.ndarray, v: np.ndarray, w0: float = 0.0
    ) -> Delta:
        """A float64 delta of rows ``names``: weights ``w``, latents ``v`` ``(m, k)``."""
        delta = cls(n_factors, dtype=np.float64)
        rows = delta.rows_of(names)
        if len(rows):
            delta._w[rows] = w
            delta._v[rows] = np.asarray(v, dtype=np.float64).reshape(len(rows), n_factors)
        delta.w0 = float(w0)
        return delta

    def to_json(self) -> dict[str, Any]:
        """The JSON form, rows in recency order (least recently used first), as the binary."""
        order, rows = self._recency_order()
        return {
            "w0": self.w0,
            "features": order,
            "w": self._w[rows].astype(np.float64).tolist(),
            "v": self._v[rows].astype(np.float64).tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], n_factors: int, *, dtype: type = np.float32) -> Delta:
        delta = cls(n_factors, dtype=dtype)
        rows = delta.rows_of(data["features"])
        delta._w[rows] = np.asarray(data["w"], dtype=np.float64)
        if rows.size:
            delta._v[rows] = np.asarray(data["v"], dtype=np.float64).reshape(-1, n_factors)
        delta.w0 = float(data["w0"])
        return delta

    def __repr__(self) -> str:
        return f"Delta(rows={len(self)}, events={self.n_events}, k={self.n_factors})"


def rebase(
    delta: Delta, share: Delta, *, bound: float = MAX_DELTA, prune_below: float = PRUNE_BELOW
) -> Delta:
    """``delta`` minus ``share`` (what a round folded into the base for this user, see
    ``fedlearn.aggregate.rebase``): the same clone expressed on the new base. Rows of
    ``share`` left within :data:`REBASE_TOLERANCE` of zero are dropped, and so is every row
    whose parameters are all below ``prune_below`` in size (the clone falls back to the base
    there); parameters stay in ``[-bound, bound]`` (the clones' box). The one rebase of the
    trainer, the snapshots, the API (on the fly) and the replay; ``delta`` is not modified."""
    out = delta.copy()
    out.w0 = float(np.clip(delta.w0 - share.w0, -bound, bound))
    if not len(share):
        return out
    rows = out.rows_of(share.names)
    # in float64: a user alone on a row lands on zero exactly
    w = out._w[rows].astype(np.float64) - share.w
    v = out._v[rows].astype(np.float64) - share.v
    out._w[rows] = np.clip(w, -bound, bound)
    out._v[rows] = np.clip(v, -bound, bound)
    zero = (np.abs(w) <= REBASE_TOLERANCE) & (np.abs(v) <= REBASE_TOLERANCE).all(axis=1)
    out.drop(share.names[i] for i in np.flatnonzero(zero))
    if prune_below > 0 and len(out):
        tiny = np.maximum(np.abs(out.w), np.abs(out.v).max(axis=1)) < prune_below
        out.drop(out.names[i] for i in np.flatnonzero(tiny))
    return out


class DeltaRows(NamedTuple):
    """A decoded ``.fldl``: row names in recency order, their float32 weights ``(m,)`` and
    latents ``(m, k)`` (read-only views of the blob), the intercept and the events count."""

    names: list[str]
    w: np.ndarray
    v: np.ndarray
    w0: float
    n_events: int


def decode_rows(blob: bytes) -> DeltaRows:
    """The rows of ``.fldl`` bytes (format 1 or 2), checked as :meth:`Delta.from_bytes` says,
    without building a :class:`Delta`: the trainer's table takes them as they are."""
    blob = bytes(blob)
    m, k, w0, n_events, names_len = _check_head(blob)
    names = _decode_names(blob[_HEAD.size : _HEAD.size + names_len], m)
    offset = _HEAD.size + names_len
    w = np.frombuffer(blob, "<f4", m, offset)
    v = np.frombuffer(blob, "<f4", m * k, offset + 4 * m).reshape(m, k)
    if not (math.isfinite(w0) and np.isfinite(w).all() and np.isfinite(v).all()):
        raise ModelFormatError("delta holds a non-finite parameter (NaN or infinity)")
    return DeltaRows(names, w, v, w0, n_events)


def pack_delta(
    names: Collection[str],
    n_factors: int,
    w0: float,
    n_events: int,
    w: bytes | memoryview,
    v: bytes | memoryview,
) -> bytes:
    """The ``.fldl`` bytes of rows ``names`` (in recency order) whose weights and latents are
    ``w`` and ``v``, already little-endian float32 in that order: the one writer of the format
    (``Delta.to_bytes``, and the trainer's table, which encodes many users from one gather).
    The names block in one join (not one f-string a name: the trainer packs ~50 users a
    batch, ~40 names each)."""
    block = ("\n".join(names) + "\n").encode("utf-8") if names else b""
    pad = b"\0" * (-(_HEAD.size + len(block)) % 4)
    head = _HEAD.pack(MAGIC, FORMAT, len(names), n_factors, w0, n_events, len(block) + len(pad))
    body = b"".join((head, block, pad, w, v))
    return body + _CRC.pack(zlib.crc32(body))


def events_of(blob: bytes) -> int:
    """The events count in a ``.fldl`` header, without decoding the rows (the store reads it
    from every delta it commits); :class:`ModelFormatError` if ``blob`` is not a delta."""
    if len(blob) < _HEAD.size or blob[:4] != MAGIC:
        raise ModelFormatError(
            f"not a .fldl delta (starts with {bytes(blob[:8])!r}, {len(blob)} bytes)"
        )
    return int(_HEAD.unpack_from(blob)[5])


def _check_head(blob: bytes) -> tuple[int, int, float, int, int]:
    """``m, k, w0, n_events, names_len`` of a ``.fldl`` header, checked against the blob."""
    if len(blob) < _HEAD.size:
        raise ModelFormatError(f"delta is {len(blob)} bytes, shorter than its header")
    magic, fmt, m, k, w0, n_events, names_len = _HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise ModelFormatError(f"not a fedlearn delta: magic is {magic!r}, expected {MAGIC!r}")
    if fmt not in (1, FORMAT):
        raise ModelFormatError(f"delta format {fmt} is not supported (this build reads 1, 2)")
    if not 1 <= k <= MAX_FACTORS:
        raise ModelFormatError(f"delta has k = {k} factors, expected 1..{MAX_FACTORS}")
    trailer = _CRC.size if fmt == FORMAT else 0
    size = _HEAD.size + names_len + 4 * m * (1 + k) + trailer
    if len(blob) != size or (_HEAD.size + names_len) % 4:
        raise ModelFormatError(
            f"delta of {m} rows x {k} factors with a {names_len}-byte names block must be "
            f"{size} bytes (names block padded to 4), got {len(blob)}"
        )
    if trailer:
        (stored,) = _CRC.unpack_from(blob, size - trailer)
        actual = zlib.crc32(memoryview(blob)[: size - trailer])
        if stored != actual:
            raise ModelFormatError(
                f"delta checksum mismatch (stored {stored:#010x}, computed {actual:#010x}): "
                "the record is corrupt"
            )
    return m, k, w0, n_events, names_len


def _decode_names(block: bytes, m: int) -> list[str]:
    """The ``m`` feature names of a names block: ``name\\n`` each, then at most 3 zero bytes."""
    body = block.rstrip(b"\0")
    if len(block) - len(body) > 3 or (m and not body.endswith(b"\n")) or (not m and body):
        raise ModelFormatError("delta names block is not m names each ended by a newline")
    try:
        names = body.decode("utf-8").split("\n")[:-1] if m else []
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"delta names are not UTF-8: {exc}") from exc
    if len(names) != m or len(set(names)) != m or "" in names:
        raise ModelFormatError(
            f"delta names block holds {len(names)} names for {m} rows (names must be non-empty "
            "and unique)"
        )
    return names
