"""A shard's partial result of a round: built chunk by chunk by the map step, stored as bytes
(one blob per bucket of rows, numpy ``.npz`` without pickle), and merged across shards by the
reducer one bucket at a time. Rules that only need sums get per-row sums (small: one entry
per row); rules that need every value (median, trimmed mean) get every user's row values.
FedAvgM's state is stored the same way.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fedlearn.aggregate.changes import Changes
from fedlearn.aggregate.strategies import RowSums, RowUpdate, RowValues
from fedlearn.model.block import RowTable


def bucket_of(names: Sequence[str], buckets: int) -> np.ndarray:
    """The bucket of each row name: CRC-32 of its UTF-8 bytes, modulo ``buckets``."""
    return np.fromiter(
        (zlib.crc32(n.encode("utf-8")) % buckets for n in names), np.int64, len(names)
    )


def _pack(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _names_blob(names: Iterable[str]) -> np.ndarray:
    return np.frombuffer("\n".join(names).encode("utf-8"), dtype=np.uint8)


def _names_of(blob: np.ndarray) -> list[str]:
    text = blob.tobytes().decode("utf-8")
    return text.split("\n") if text else []


class PartialBuilder:
    """Accumulates a shard's changes, chunk after chunk, into its partial result."""

    def __init__(self, n_factors: int, *, needs_values: bool) -> None:
        self.k = n_factors
        self.needs_values = needs_values
        self.table = RowTable()
        self.users = 0
        self.events = 0
        self.weight = 0.0
        self._norms: list[np.ndarray] = []
        self._sum_w = np.zeros(0)
        self._sum_v = np.zeros((0, n_factors))
        self._sum_weight = np.zeros(0)
        self._count = np.zeros(0, dtype=np.int64)
        self._values: list[tuple[np.ndarray, ...]] = []

    def add(self, changes: Changes) -> None:
        self.users += changes.n_users
        self.events += int(changes.events.sum())
        self.weight += float(changes.weight.sum())
        self._norms.append(changes.norm)
        entry_weight = changes.weight[changes.user]
        if self.needs_values:
            self._values.append((changes.row, changes.w, changes.v, entry_weight))
            return
        n = len(self.table.names)
        if len(self._sum_w) < n:
            grow = n - len(self._sum_w)
            self._sum_w = np.concatenate([self._sum_w, np.zeros(grow)])
            self._sum_v = np.concatenate([self._sum_v, np.zeros((grow, self.k))])
            self._sum_weight = np.concatenate([self._sum_weight, np.zeros(grow)])
            self._count = np.concatenate([self._count, np.zeros(grow, dtype=np.int64)])
        row = changes.row
        self._sum_w += np.bincount(row, weights=entry_weight * changes.w, minlength=n)
        for f in range(self.k):
            self._sum_v[:, f] += np.bincount(
                row, weights=entry_weight * changes.v[:, f], minlength=n
            )
        self._sum_weight += np.bincount(row, weights=entry_weight, minlength=n)
        self._count += np.bincount(row, minlength=n)

    @property
    def norms(self) -> np.ndarray:
        return np.concatenate(self._norms) if self._norms else np.zeros(0)

    def blobs(self, buckets: int) -> dict[str, bytes]:
        """``{"b0": ..., "b<buckets-1>": ..., "norms": ...}``: the fields a shard stores."""
        names = self.table.names
        bucket = bucket_of(names, buckets)
        out: dict[str, bytes] = {"norms": _pack(norms=self.norms.astype(np.float64))}
        if self.needs_values:
            parts = self._values or [
                (np.zeros(0, np.int64), np.zeros(0), np.zeros((0, self.k)), np.zeros(0))
            ]
            row = np.concatenate([p[0] for p in parts])
            w = np.concatenate([p[1] for p in parts])
            v = np.concatenate([p[2] for p in parts])
            weight = np.concatenate([p[3] for p in parts])
        for b in range(buckets):
            mine = np.flatnonzero(bucket == b)
            local = np.full(len(names) + 1, -1, dtype=np.int64)
            local[mine] = np.arange(len(mine))
            bucket_names = _names_blob(names[i] for i in mine)
            if self.needs_values:
                keep = bucket[row] == b
                out[f"b{b}"] = _pack(
                    names=bucket_names,
                    row=local[row[keep]].astype(np.int32),
                    w=w[keep].astype(np.float32),
                    v=v[keep].astype(np.float32),
                    weight=weight[keep].astype(np.float32),
                )
            else:
                out[f"b{b}"] = _pack(
                    names=bucket_names,
                    w=self._sum_w[mine],
                    v=self._sum_v[mine],
                    weight=self._sum_weight[mine],
                    count=self._count[mine],
                )
        return out

    def rows(self, *, max_weight: float, clip_norm: float | None) -> RowSums | RowValues:
        """Everything added so far as one strategy input (no buckets, no bytes)."""
        names = list(self.table.names)
        if self.needs_values:
            parts = self._values
            if not parts:
                parts = [(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, self.k)), np.zeros(0))]
            return RowValues(
                names,
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]),
                np.concatenate([p[3] for p in parts]),
                max_weight,
                clip_norm,
            )
        n = len(names)
        pad = n - len(self._sum_w)  # rows named after the last add (none in practice)
        return RowSums(
            names,
            np.concatenate([self._sum_w, np.zeros(pad)]),
            np.concatenate([self._sum_v, np.zeros((pad, self.k))]),
            np.concatenate([self._sum_weight, np.zeros(pad)]),
            np.concatenate([self._count, np.zeros(pad, dtype=np.int64)]),
            max_weight,
            clip_norm,
        )

    def meta(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "events": self.events,
            "weight": self.weight,
            "rows": len(self.table.names),
        }


def merge_bucket(
    blobs: Sequence[bytes],
    n_factors: int,
    *,
    needs_values: bool,
    max_weight: float,
    clip_norm: float | None,
) -> RowSums | RowValues:
    """One bucket of every shard, merged row by row."""
    table = RowTable()
    k = n_factors
    parts = []
    for blob in blobs:
        data = _unpack(blob)
        rows = np.fromiter((table.row_of(n) for n in _names_of(data["names"])), np.int64)
        parts.append((rows, data))
    n = len(table.names)
    if needs_values:
        row = [rows[d["row"].astype(np.int64)] for rows, d in parts]
        return RowValues(
            list(table.names),
            np.concatenate(row) if row else np.zeros(0, np.int64),
            np.concatenate([d["w"].astype(np.float64) for _, d in parts]) if parts else np.zeros(0),
            np.concatenate([d["v"].astype(np.float64).reshape(-1, k) for _, d in parts])
            if parts
            else np.zeros((0, k)),
            np.concatenate([d["weight"].astype(np.float64) for _, d in parts])
            if parts
            else np.zeros(0),
            max_weight,
            clip_norm,
        )
    w, v = np.zeros(n), np.zeros((n, k))
    weight, count = np.zeros(n), np.zeros(n, dtype=np.int64)
    for rows, d in parts:
        # a row appears once in one shard's bucket, so fancy-index addition is exact
        w[rows] += d["w"]
        v[rows] += d["v"].reshape(-1, k)
        weight[rows] += d["weight"]
        count[rows] += d["count"]
    return RowSums(list(table.names), w, v, weight, count, max_weight, clip_norm)


def norms_of(blob: bytes) -> np.ndarray:
    return _unpack(blob)["norms"]


def update_to_bytes(update: RowUpdate) -> bytes:
    return _pack(names=_names_blob(update.names), w=update.w, v=update.v, count=update.count)


def update_from_bytes(blob: bytes, n_factors: int) -> RowUpdate:
    data = _unpack(blob)
    return RowUpdate(
        _names_of(data["names"]), data["w"], data["v"].reshape(-1, n_factors), data["count"]
    )
