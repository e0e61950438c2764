"""Deterministic latent initialisation for features the base never saw.

A clone meets new features all the time (a new film, a new context value). Their latent vector
must start from the same values on every trainer, after every restart and in the browser, so it
is derived from the feature's name alone: FNV-1a (32 bit) of the UTF-8 name, mixed with the base's
seed, drives a mulberry32 generator. Both are a handful of 32-bit integer operations, which
JavaScript reproduces exactly with ``Math.imul`` (see ``client_js/src/fm.js``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

_MASK = 0xFFFFFFFF


def fnv1a32(data: bytes) -> int:
    """The 32-bit FNV-1a hash of ``data``."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & _MASK
    return h


def fnv1a32_many(names: Sequence[str]) -> np.ndarray:
    """``fnv1a32`` of every name's UTF-8 bytes, vectorized over names (uint32 array).

    The names are laid out as a byte matrix, one column per name, and hashed one byte
    position at a time over all of them (a name shorter than the position keeps its hash):
    a million feature names take about a second, the per-name loop many.
    """
    encoded = [name.encode("utf-8") for name in names]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    width = int(lengths.max(initial=0))
    h = np.full(len(encoded), 0x811C9DC5, np.uint64)
    if width == 0:
        return h.astype(np.uint32)
    table = np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(len(encoded), width)
    for pos, column in enumerate(np.ascontiguousarray(table.T)):
        np.copyto(h, ((h ^ column) * 0x01000193) & _MASK, where=lengths > pos)
    return h.astype(np.uint32)


def _imul(a: int, b: int) -> int:
    return (a * b) & _MASK


def mulberry32(state: int, n: int) -> list[float]:
    """``n`` successive uniform draws in [0, 1) of mulberry32 started from ``state``."""
    out = []
    a = state & _MASK
    for _ in range(n):
        a = (a + 0x6D2B79F5) & _MASK
        t = a
        t = _imul(t ^ (t >> 15), t | 1)
        t = (t ^ ((t + _imul(t ^ (t >> 7), t | 61)) & _MASK)) & _MASK
        out.append(((t ^ (t >> 14)) & _MASK) / 4294967296.0)
    return out


@lru_cache(maxsize=1 << 16)
def init_latent(name: str, n_factors: int, seed: int, scale: float) -> np.ndarray:
    """The starting latent vector of feature ``name``: uniform in [-scale, scale).

    Cached (read-only arrays): a trainer meets the same new item for many users.
    """
    state = fnv1a32(name.encode("utf-8")) ^ (seed & _MASK)
    draws = np.asarray(mulberry32(state, n_factors), dtype=np.float64)
    out = scale * (2.0 * draws - 1.0)
    out.flags.writeable = False
    return out


def mulberry32_many(states: np.ndarray, n: int) -> np.ndarray:
    """``mulberry32(state, n)`` for every state, vectorized: ``(len(states), n)`` draws.

    The products of two 32-bit values fit uint64 exactly, so masking gives ``_imul``'s. The
    generator's state only adds a constant per draw, so the ``i``-th state is known up front
    and all draws are made at once (a loop over draws was a few hundred numpy calls a batch)."""
    steps = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x6D2B79F5)
    a = ((states.astype(np.uint64) & _MASK)[:, None] + steps) & _MASK
    t = ((a ^ (a >> 15)) * (a | 1)) & _MASK
    t = (t ^ ((t + (((t ^ (t >> 7)) * (t | 61)) & _MASK)) & _MASK)) & _MASK
    return (t ^ (t >> 14)) / 4294967296.0


# From this many names on, one vectorized pass beats the per-name (cached) draws: a trainer's
# batch meets hundreds of names no base has (every new user's ``user=`` row).
_VECTORIZE_FROM = 32


def init_latents(names: list[str], n_factors: int, seed: int, scale: float) -> np.ndarray:
    """Starting latents for many names, one row each, shape ``(len(names), n_factors)``."""
    if not names:
        return np.empty((0, n_factors), dtype=np.float64)
    # Each distinct name drawn once: a trainer's batch asks for the same few unseen context
    # rows (``hour=21``) for every user who has them, ten times more names than distinct ones.
    distinct = list(dict.fromkeys(names))
    if len(distinct) < len(names):
        where = dict(zip(distinct, range(len(distinct)), strict=True))
        at = np.fromiter(map(where.__getitem__, names), np.int64, len(names))
        return init_latents(distinct, n_factors, seed, scale)[at]
    if len(names) < _VECTORIZE_FROM:
        return np.stack([init_latent(name, n_factors, seed, scale) for name in names])
    states = fnv1a32_many(names).astype(np.uint64) ^ (seed & _MASK)
    return scale * (2.0 * mulberry32_many(states, n_factors) - 1.0)
