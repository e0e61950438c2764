"""Row sets: some rows of a base, so a client downloads what it scores, not the whole base.

A base of a million items is ~44 MB at k = 10; a session scores a hundred candidates. The
rows are grouped in *buckets* by a hash of the feature name (``fnv1a32(utf8(name)) %
n_buckets``, the hash the unseen-feature latent already uses, so the browser has it), and
each bucket of a version is an immutable blob that every user and every HTTP cache shares.
The bucket count grows with the base (:func:`bucket_count`), so a bucket holds a few rows
whatever the catalog's size, and a session moves the same kilobytes for a thousand items or
a million. The file format (``.flrs``, docs/CONTRACTS.md) has the base's prefix: magic,
format, header length, CRC-32; a JSON header naming the rows; float32 weights and latents.

A :class:`PartialBase` holds the rows a client fetched and scores exactly like the
:class:`~fedlearn.model.base.Base` (the same ``rows``), and refuses a feature whose bucket
it never fetched instead of scoring it as a feature the base never saw.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from fedlearn.model.base import MAX_FACTORS, Base, gather_rows, pack_arrays
from fedlearn.model.errors import ModelFormatError
from fedlearn.model.hashinit import fnv1a32, fnv1a32_many

MAGIC = b"FLRS"
FORMAT = 1
_PREFIX = struct.Struct("<4sIII")  # magic, format, header length, CRC-32 of bytes 16..
MAX_BUCKETS = 1 << 24  # 16M buckets: far beyond any catalog; refuses a garbled header early


def bucket_count(n_features: int, rows_per_bucket: int) -> int:
    """The power of two that puts at most ``rows_per_bucket`` rows in a bucket on average
    (between half and all of it), at least 1."""
    if rows_per_bucket < 1:
        raise ValueError(f"rows_per_bucket must be >= 1, got {rows_per_bucket}")
    wanted = max(1, math.ceil(n_features / rows_per_bucket))
    return min(MAX_BUCKETS, 1 << (wanted - 1).bit_length())


def bucket_of(name: str, n_buckets: int) -> int:
    """The bucket holding feature ``name``'s row (whether or not the base has that row)."""
    return fnv1a32(name.encode("utf-8")) % n_buckets


def buckets_of(names: Iterable[str], n_buckets: int) -> set[int]:
    """The buckets a client needs to score ``names``."""
    return {bucket_of(name, n_buckets) for name in names}


@dataclass(frozen=True)
class RowSet:
    """Rows of base ``version``: ``features`` with their weights ``w (m,)`` and latents
    ``v (m, k)``. ``buckets`` are the buckets (of ``n_buckets``) it holds *whole*: a name of
    one of them that is not in ``features`` is a feature the base never saw. An exact row set
    (``n_buckets`` 0, no buckets) vouches only for the names it lists."""

    version: str
    features: list[str]
    w: np.ndarray
    v: np.ndarray
    n_buckets: int = 0
    buckets: tuple[int, ...] = ()

    @property
    def n_factors(self) -> int:
        return int(self.v.shape[1])

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "n_factors": self.n_factors,
            "n_rows": len(self.features),
            "n_buckets": self.n_buckets,
            "buckets": list(self.buckets),
            "features": self.features,
        }

    def to_bytes(self) -> bytes:
        """The ``.flrs`` bytes (CONTRACTS.md), with the CRC-32 of bytes 16.. at bytes 12..15."""
        return pack_arrays(MAGIC, FORMAT, self.header(), self.w, self.v)

    @classmethod
    def from_bytes(cls, blob: bytes) -> RowSet:
        """Decode ``.flrs`` bytes; :class:`ModelFormatError` if malformed (sizes checked
        against the blob before anything is allocated, then the checksum, fields, values)."""
        blob = bytes(blob)
        if len(blob) < _PREFIX.size:
            raise ModelFormatError(f"row set is {len(blob)} bytes, shorter than its prefix")
        magic, fmt, header_len, crc = _PREFIX.unpack_from(blob)
        if magic != MAGIC:
            raise ModelFormatError(f"not a row set: magic is {magic!r}, expected {MAGIC!r}")
        if fmt != FORMAT:
            raise ModelFormatError(f"row set format {fmt} is not supported (this build reads 1)")
        if header_len % 8 or header_len > len(blob) - _PREFIX.size:
            raise ModelFormatError(
                f"row set header length {header_len} is not a multiple of 8 within the "
                f"{len(blob)}-byte blob"
            )
        if crc != zlib.crc32(memoryview(blob)[_PREFIX.size :]):
            raise ModelFormatError(
                f"row set checksum mismatch (stored {crc:#010x}): the blob is corrupt or truncated"
            )
        try:
            head = orjson.loads(blob[_PREFIX.size : _PREFIX.size + header_len])
        except orjson.JSONDecodeError as exc:
            raise ModelFormatError(f"row set header does not decode: {exc}") from exc
        m, k = _check_header(head)
        offset = _PREFIX.size + header_len
        if len(blob) != offset + 4 * m * (1 + k):
            raise ModelFormatError(
                f"row set of {m} rows x {k} factors must be {offset + 4 * m * (1 + k)} bytes, "
                f"got {len(blob)}"
            )
        w = np.frombuffer(blob, "<f4", m, offset)
        v = np.frombuffer(blob, "<f4", m * k, offset + 4 * m).reshape(m, k)
        if not (np.isfinite(w).all() and np.isfinite(v).all()):
            raise ModelFormatError("row set holds a non-finite weight or latent (NaN or infinity)")
        return cls(
            head["version"], head["features"], w, v, head["n_buckets"], tuple(head["buckets"])
        )


def _check_header(head: Any) -> tuple[int, int]:
    """Rows and factors of a row set header whose fields all have the right type and range."""
    if not isinstance(head, dict):
        raise ModelFormatError(f"row set header must be a JSON object, got {type(head).__name__}")

    def whole(name: str, low: int, high: int) -> int:
        value = head.get(name)
        if type(value) is not int or not low <= value <= high:
            raise ModelFormatError(f"row set header {name!r} must be an integer in {low}..{high}")
        return value

    if head.get("format") != FORMAT:
        raise ModelFormatError(f"row set header 'format' must be {FORMAT}")
    k = whole("n_factors", 1, MAX_FACTORS)
    m = whole("n_rows", 0, 1 << 31)
    n_buckets = whole("n_buckets", 0, MAX_BUCKETS)
    if not isinstance(head.get("version"), str) or not head["version"]:
        raise ModelFormatError("row set header 'version' must be a non-empty string")
    features = head.get("features")
    if not isinstance(features, list) or len(features) != m:
        raise ModelFormatError("row set header 'features' must list n_rows names")
    if not all(isinstance(name, str) for name in features) or len(set(features)) != m:
        raise ModelFormatError("row set header 'features' must hold distinct strings")
    buckets = head.get("buckets")
    if not isinstance(buckets, list) or not all(
        type(b) is int and 0 <= b < n_buckets for b in buckets
    ):
        raise ModelFormatError(f"row set header 'buckets' must list buckets below {n_buckets}")
    if any(bucket_of(name, n_buckets) not in buckets for name in features if n_buckets):
        raise ModelFormatError("row set holds a row outside the buckets its header lists")
    return m, k


class BucketIndex:
    """A base's rows grouped by bucket, built once per (version, bucket count): serving a
    bucket then slices a precomputed order, with no scan of the base's rows."""

    def __init__(self, base: Base, n_buckets: int) -> None:
        if not 1 <= n_buckets <= MAX_BUCKETS:
            raise ValueError(f"n_buckets must be in 1..{MAX_BUCKETS}, got {n_buckets}")
        self.base = base
        self.n_buckets = n_buckets
        of_row = fnv1a32_many(base.features) % np.uint32(n_buckets)
        self._order = np.argsort(of_row, kind="stable")
        self._starts = np.searchsorted(of_row[self._order], np.arange(n_buckets + 1))

    def rowset(self, bucket: int) -> RowSet:
        """The whole bucket ``bucket`` (``ValueError`` outside ``0..n_buckets-1``)."""
        if not 0 <= bucket < self.n_buckets:
            raise ValueError(f"bucket must be in 0..{self.n_buckets - 1}, got {bucket}")
        rows = self._order[self._starts[bucket] : self._starts[bucket + 1]]
        features = [self.base.features[r] for r in rows]
        return RowSet(
            self.base.version, features, self.base.w[rows], self.base.v[rows],
            self.n_buckets, (bucket,),
        )  # fmt: skip


def exact_rowset(base: Base, names: Iterable[str]) -> RowSet:
    """The rows of ``names`` that ``base`` holds (the others are features it never saw)."""
    rows = [base.index[n] for n in dict.fromkeys(names) if n in base.index]
    idx = np.asarray(rows, dtype=np.int64)
    return RowSet(base.version, [base.features[r] for r in rows], base.w[idx], base.v[idx])


class MissingRowsError(LookupError):
    """A partial base was asked for rows of buckets it never fetched; names them."""

    def __init__(self, names: list[str], buckets: list[int]) -> None:
        super().__init__(
            f"{len(names)} feature(s) are in buckets this partial base has not fetched "
            f"(e.g. {names[:3]!r}, buckets {buckets[:3]}): fetch their rows first"
        )
        self.names = names
        self.buckets = buckets


class PartialBase:
    """The rows of base ``version`` a client fetched, bucket by bucket, and the base's scalars
    (from the user's model answer). Scores like the whole base: ``rows`` is the same function
    over fewer rows; a name outside the fetched buckets raises :class:`MissingRowsError`."""

    def __init__(
        self,
        version: str,
        *,
        n_buckets: int,
        n_factors: int,
        w0: float,
        init_seed: int,
        init_scale: float,
    ) -> None:
        if not 1 <= n_buckets <= MAX_BUCKETS or not 1 <= n_factors <= MAX_FACTORS:
            raise ValueError(f"need 1 <= n_buckets, n_factors; got {n_buckets}, {n_factors}")
        self.version = version
        self.n_buckets = n_buckets
        self.w0 = float(w0)
        self.init_seed = int(init_seed)
        self.init_scale = float(init_scale)
        self.buckets: set[int] = set()
        self.index: dict[str, int] = {}
        self.w = np.zeros(0, dtype=np.float32)
        self.v = np.zeros((0, n_factors), dtype=np.float32)

    @classmethod
    def from_json(cls, version: str, head: Mapping[str, Any]) -> PartialBase:
        """From the ``base_rows`` object of ``GET /v1/users/{user}/model``."""
        return cls(
            version,
            n_buckets=int(head["n_buckets"]),
            n_factors=int(head["n_factors"]),
            w0=float(head["w0"]),
            init_seed=int(head["init_seed"]),
            init_scale=float(head["init_scale"]),
        )

    @property
    def n_factors(self) -> int:
        return int(self.v.shape[1])

    def missing(self, names: Iterable[str]) -> list[int]:
        """Buckets still to fetch before ``names`` can be scored, sorted."""
        return sorted(buckets_of(names, self.n_buckets) - self.buckets)

    def add(self, rowset: RowSet) -> None:
        """Take a fetched bucket's rows (``ValueError`` if it belongs to another base)."""
        if (rowset.version, rowset.n_buckets, rowset.n_factors) != (
            self.version, self.n_buckets, self.n_factors,
        ):  # fmt: skip
            raise ValueError(
                f"row set of base {rowset.version!r} ({rowset.n_buckets} buckets, "
                f"k={rowset.n_factors}) does not belong to {self.version!r} "
                f"({self.n_buckets} buckets, k={self.n_factors})"
            )
        new = [i for i, name in enumerate(rowset.features) if name not in self.index]
        start = len(self.w)
        self.index.update((rowset.features[i], start + j) for j, i in enumerate(new))
        self.w = np.concatenate([self.w, rowset.w[new]])
        self.v = np.concatenate([self.v, rowset.v[new]])
        self.buckets.update(rowset.buckets)

    def rows(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`Base.rows`; :class:`MissingRowsError` for a name of an unfetched bucket."""
        outside = [n for n in names if bucket_of(n, self.n_buckets) not in self.buckets]
        if outside:
            raise MissingRowsError(outside, self.missing(outside))
        return gather_rows(self.index, self.w, self.v, names, self.init_seed, self.init_scale)

    def __repr__(self) -> str:
        return (
            f"PartialBase(version={self.version!r}, rows={len(self.w)}, "
            f"buckets={len(self.buckets)}/{self.n_buckets})"
        )
