"""The base model: an immutable factorization machine shared by every user's clone.

A base is a vocabulary of feature names and three learned arrays (intercept ``w0``, weights
``w``, latents ``v``). It is written once, never changed: aggregation and monthly training
publish a *new* base. The file format (``.flfm``) is the one in ``docs/CONTRACTS.md``; it is
also what ``GET /v1/base/{version}`` serves, so the browser reads it with a ``DataView``.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from itertools import compress, repeat
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fedlearn.model.errors import ModelFormatError
from fedlearn.model.hashinit import init_latents

MAGIC = b"FLFM"
FORMAT = 2  # 2 put a CRC-32 of bytes 16.. into the reserved word; format 1 is still read
_PREFIX = struct.Struct("<4sIII")
MAX_FACTORS = 1024  # far above any useful k; only there to refuse a garbled header early

DEFAULT_INIT_SEED = 0
DEFAULT_INIT_SCALE = 0.1


class Base:
    """An immutable FM: ``features`` name the rows of ``w`` and ``v``.

    Parameters
    ----------
    features
        Feature names, in row order.
    w0, w, v
        Learned intercept, weights ``(n,)`` and latents ``(n, k)``; stored as float32.
    version
        The id under which the base is published.
    init_seed, init_scale
        How latents of features outside ``features`` start (see ``hashinit``).
    hyper, meta
        Training hyperparameters, and facts about the data and lineage (JSON-able dicts).
    """

    __slots__ = (
        "features",
        "hyper",
        "index",
        "init_scale",
        "init_seed",
        "meta",
        "v",
        "version",
        "w",
        "w0",
    )

    def __init__(
        self,
        features: list[str],
        w0: float,
        w: np.ndarray,
        v: np.ndarray,
        *,
        version: str = "0",
        init_seed: int = DEFAULT_INIT_SEED,
        init_scale: float = DEFAULT_INIT_SCALE,
        hyper: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        w = np.ascontiguousarray(w, dtype=np.float32)
        v = np.ascontiguousarray(v, dtype=np.float32)
        if w.shape != (len(features),) or v.ndim != 2 or v.shape[0] != len(features):
            raise ValueError(
                f"base arrays do not match {len(features)} features: "
                f"w has shape {w.shape}, v has shape {v.shape}"
            )
        index = {name: row for row, name in enumerate(features)}
        if len(index) != len(features):
            raise ValueError("base feature names must be unique")
        w.flags.writeable = False
        v.flags.writeable = False
        self.features = list(features)
        self.index = index
        self.w0 = float(w0)
        self.w = w
        self.v = v
        self.version = str(version)
        self.init_seed = int(init_seed)
        self.init_scale = float(init_scale)
        self.hyper = dict(hyper or {})
        self.meta = dict(meta or {})

    @property
    def n_factors(self) -> int:
        return int(self.v.shape[1])

    @property
    def n_features(self) -> int:
        return len(self.features)

    @classmethod
    def fresh(
        cls,
        features: Iterable[str],
        n_factors: int = 10,
        *,
        init_seed: int = DEFAULT_INIT_SEED,
        init_scale: float = DEFAULT_INIT_SCALE,
        version: str = "0",
    ) -> Base:
        """An untrained base: zero weights, every latent at its deterministic start."""
        names = list(dict.fromkeys(features))
        return cls(
            names,
            0.0,
            np.zeros(len(names)),
            init_latents(names, n_factors, init_seed, init_scale),
            version=version,
            init_seed=init_seed,
            init_scale=init_scale,
        )

    def rows(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Base weights ``(m,)`` and latents ``(m, k)`` (float64) for ``names``.

        A name the base never saw gets weight 0 and its deterministic starting latent.
        """
        return gather_rows(self.index, self.w, self.v, names, self.init_seed, self.init_scale)

    # -- format ---------------------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "n_factors": self.n_factors,
            "n_features": self.n_features,
            "w0": self.w0,
            "features": self.features,
            "init_seed": self.init_seed,
            "init_scale": self.init_scale,
            "hyper": self.hyper,
            "meta": self.meta,
        }

    def to_bytes(self) -> bytes:
        """The ``.flfm`` bytes (CONTRACTS.md), with the CRC-32 of bytes 16.. at bytes 12..15."""
        return pack_arrays(MAGIC, FORMAT, self.header(), self.w, self.v)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Base:
        """Decode ``.flfm`` bytes (format 1 or 2); :class:`ModelFormatError` if malformed.

        Sizes are checked against ``len(blob)`` before the arrays are touched; the arrays are
        views of ``blob``, not copies.
        """
        blob = bytes(blob)
        head = _decode_header(blob)
        n, k = head["n_features"], head["n_factors"]
        offset = _PREFIX.size + _PREFIX.unpack_from(blob)[2]
        w = np.frombuffer(blob, "<f4", n, offset)
        v = np.frombuffer(blob, "<f4", n * k, offset + 4 * n).reshape(n, k)
        if not (np.isfinite(w).all() and np.isfinite(v).all()):
            raise ModelFormatError("base holds a non-finite weight or latent (NaN or infinity)")
        try:
            return cls(
                head["features"],
                head["w0"],
                w,
                v,
                version=head["version"],
                init_seed=head["init_seed"],
                init_scale=head["init_scale"],
                hyper=head.get("hyper"),
                meta=head.get("meta"),
            )
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"base header does not describe a model: {exc}") from exc

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically: a reader never sees half a model."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.to_bytes())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Base:
        return cls.from_bytes(Path(path).read_bytes())

    def with_version(self, version: str, **meta: Any) -> Base:
        """The same parameters under another version id, with ``meta`` merged in."""
        return Base(
            self.features,
            self.w0,
            self.w,
            self.v,
            version=version,
            init_seed=self.init_seed,
            init_scale=self.init_scale,
            hyper=self.hyper,
            meta={**self.meta, **meta},
        )

    def __repr__(self) -> str:
        return f"Base(version={self.version!r}, features={self.n_features}, k={self.n_factors})"


def pack_arrays(
    magic: bytes, fmt: int, header: dict[str, Any], w: np.ndarray, v: np.ndarray
) -> bytes:
    """The layout a base and a row set share: 16-byte prefix (magic, format, header length,
    CRC-32 of bytes 16..), the JSON header padded to 8 bytes, then ``w`` and ``v`` as
    little-endian float32."""
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    head += b" " * (-len(head) % 8)
    body = b"".join((head, w.astype("<f4").tobytes(), v.astype("<f4").tobytes()))
    return _PREFIX.pack(magic, fmt, len(head), zlib.crc32(body)) + body


def gather_rows(
    index: Mapping[str, int],
    w: np.ndarray,
    v: np.ndarray,
    names: list[str],
    init_seed: int,
    init_scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and latents (float64) of ``names`` from rows ``index`` points at in ``w``/``v``;
    a name ``index`` lacks gets weight 0 and its deterministic starting latent. Shared by the
    whole base and the partial one a client fetched (``rowset.PartialBase``)."""
    k = v.shape[1]
    # map() over dict.get runs in C: this is on the trainer's path once per batch.
    idx = np.fromiter(map(index.get, names, repeat(-1)), np.int64, len(names))
    out_w = np.zeros(len(names))
    out_v = np.empty((len(names), k))
    known = idx >= 0
    out_w[known] = w[idx[known]]
    out_v[known] = v[idx[known]]
    if not known.all():
        unseen = list(compress(names, (~known).tolist()))  # not a Python loop over numpy bools
        out_v[~known] = init_latents(unseen, k, init_seed, init_scale)
    return out_w, out_v


def _decode_header(blob: bytes) -> dict[str, Any]:
    """The checked JSON header of a ``.flfm`` blob: sizes, checksum and field types."""
    if len(blob) < _PREFIX.size:
        raise ModelFormatError(f"base is {len(blob)} bytes, shorter than its 16-byte prefix")
    magic, fmt, header_len, crc = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise ModelFormatError(f"not a fedlearn base: magic is {magic!r}, expected {MAGIC!r}")
    if fmt not in (1, FORMAT):
        raise ModelFormatError(f"base format {fmt} is not supported (this build reads 1, 2)")
    start = _PREFIX.size
    if header_len > len(blob) - start:
        raise ModelFormatError(
            f"base header length {header_len} runs past the end of the {len(blob)}-byte blob"
        )
    if fmt == FORMAT and crc != zlib.crc32(memoryview(blob)[start:]):
        raise ModelFormatError(
            f"base checksum mismatch (stored {crc:#010x}): the file is corrupt or truncated"
        )
    try:
        head = orjson.loads(blob[start : start + header_len])
    except orjson.JSONDecodeError as exc:
        raise ModelFormatError(f"base header does not decode: {exc}") from exc
    if not isinstance(head, dict):
        raise ModelFormatError(f"base header must be a JSON object, got {type(head).__name__}")
    _check_fields(head)
    n, k = head["n_features"], head["n_factors"]
    expected = start + header_len + 4 * n * (1 + k)
    if len(blob) != expected:
        raise ModelFormatError(
            f"base of {n} features x {k} factors must be {expected} bytes, got {len(blob)}"
        )
    return head


def _check_fields(head: dict[str, Any]) -> None:
    """Refuse a header whose fields have the wrong type or range; the message names the field."""

    def whole(name: str, low: int, high: float) -> None:
        value = head.get(name)
        if type(value) is not int or not low <= value <= high:
            raise ModelFormatError(f"base header {name!r} must be an integer in {low}..{high}")

    whole("n_factors", 1, MAX_FACTORS)
    whole("n_features", 0, math.inf)
    whole("init_seed", -(1 << 63), 1 << 64)
    features = head.get("features")
    if not isinstance(features, list) or len(features) != head["n_features"]:
        raise ModelFormatError("base header 'features' must list n_features names")
    if not all(isinstance(name, str) for name in features):
        raise ModelFormatError("base header 'features' must hold strings only")
    for name in ("w0", "init_scale"):
        value = head.get(name)
        if type(value) not in (int, float) or not math.isfinite(value):
            raise ModelFormatError(f"base header {name!r} must be a finite number, got {value!r}")
    if not isinstance(head.get("version"), str):
        raise ModelFormatError("base header 'version' must be a string")
    for name in ("hyper", "meta"):
        if not isinstance(head.get(name) or {}, dict):
            raise ModelFormatError(f"base header {name!r} must be an object")
