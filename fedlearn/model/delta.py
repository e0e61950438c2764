"""A user's delta: the sparse difference between the user's clone and the shared base.

Only rows the user touched are stored, so a clone costs kilobytes, not a model copy. The
binary form (``.fldl``, see ``docs/CONTRACTS.md``) is what Redis keeps; the JSON form is what
``GET /v1/users/{user}/model`` sends to clients.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from fedlearn.model.errors import ModelFormatError

MAGIC = b"FLDL"
FORMAT = 1
_HEAD = struct.Struct("<4sIIIdQI")


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

    # -- formats --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        names = "".join(f"{n}\n" for n in self.names).encode("utf-8")
        names += b"\0" * (-(_HEAD.size + len(names)) % 4)
        head = _HEAD.pack(
            MAGIC, FORMAT, len(self.names), self.n_factors, self.w0, self.n_events, len(names)
        )
        return b"".join(
            (head, names, self.w.astype("<f4").tobytes(), self.v.astype("<f4").tobytes())
        )

    @classmethod
    def from_bytes(cls, blob: bytes, *, dtype: type = np.float32) -> Delta:
        if len(blob) < _HEAD.size:
            raise ModelFormatError(f"delta is {len(blob)} bytes, shorter than its header")
        magic, fmt, m, k, w0, n_events, names_len = _HEAD.unpack_from(blob)
        if magic != MAGIC or fmt != FORMAT:
            raise ModelFormatError(f"not a fedlearn delta (magic {magic!r}, format {fmt})")
        offset = _HEAD.size + names_len
        if len(blob) != offset + 4 * m * (1 + k):
            raise ModelFormatError(
                f"delta of {m} rows x {k} factors must be {offset + 4 * m * (1 + k)} bytes, "
                f"got {len(blob)}"
            )
        names = blob[_HEAD.size : offset].rstrip(b"\0").decode("utf-8").split("\n")[:m]
        delta = cls(k, dtype=dtype)
        delta.names = names
        delta.index = {name: row for row, name in enumerate(names)}
        delta.w0 = w0
        delta.n_events = n_events
        delta._w = np.frombuffer(blob, "<f4", m, offset).astype(delta.dtype)
        delta._v = np.frombuffer(blob, "<f4", m * k, offset + 4 * m).reshape(m, k)
        delta._v = delta._v.astype(delta.dtype)
        return delta

    def to_json(self) -> dict[str, Any]:
        return {
            "w0": self.w0,
            "features": list(self.names),
            "w": self.w.astype(np.float64).tolist(),
            "v": self.v.astype(np.float64).tolist(),
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
