"""Fuzzing the binary parsers: whatever the bytes, only ModelFormatError, and no big allocation.

A record read from Redis or a file a client sent may be anything: random bytes, a truncated
write, a flipped bit. ``Base.from_bytes``, ``Delta.from_bytes``, ``Gate.from_bytes`` and
``RowSet.from_bytes`` must answer ``ModelFormatError`` (or a model, when the bytes happen to be
valid) and never reserve more memory than the input justifies: issue #10 found a 32-byte delta
that reserved 4 GB.
Format 1 (no checksum) is fuzzed too, so the structural checks are reached, not only the CRC.
"""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedlearn.model import Base, Clone, Delta, ModelFormatError
from fedlearn.model.gating import Gate
from fedlearn.model.rowset import BucketIndex, RowSet, exact_rowset
from tests.test_model_formats import base_as_format_1, delta_as_format_1

# Bytes allocated per input byte that a parse may use (Python objects for the names in the
# header or the names block cost tens of bytes each), plus a constant for numpy and orjson.
ALLOWED_PER_BYTE = 64
ALLOWED_CONSTANT = 64 * 1024
FUZZ = settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def _valid_blobs() -> dict[str, list[bytes]]:
    rng = np.random.default_rng(3)
    names = [f"item={i}" for i in range(12)] + ["genre=Drama", "hour", "item=é"]
    base = Base(names, 0.1, rng.normal(size=len(names)), rng.normal(size=(len(names), 4)))
    clone = Clone(base, lr=0.1)
    for i in range(6):
        clone.learn_one({"user=u": 1.0, f"item={i}": 1.0, f"new={i}": 0.5}, i % 2)
    gate = Gate(1.25, 0.5, 9).to_bytes()
    return {
        "base": [base.to_bytes(), base_as_format_1(base.to_bytes())],
        "delta": [clone.delta.to_bytes(), delta_as_format_1(clone.delta.to_bytes())],
        "gate": [gate, gate[:24]],
        "rowset": [
            BucketIndex(base, 4).rowset(1).to_bytes(),
            exact_rowset(base, names[:3]).to_bytes(),
        ],
    }


VALID = _valid_blobs()
PARSERS: dict[str, Callable[[bytes], object]] = {
    "base": Base.from_bytes,
    "delta": Delta.from_bytes,
    "gate": Gate.from_bytes,
    "rowset": RowSet.from_bytes,
}


@pytest.fixture(scope="module", autouse=True)
def _tracing() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


def parse_only_format_errors(kind: str, blob: bytes) -> None:
    """Parse ``blob``; fail on any exception but ModelFormatError or an oversized allocation."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    with contextlib.suppress(ModelFormatError):
        PARSERS[kind](blob)
    peak = tracemalloc.get_traced_memory()[1] - before
    allowed = ALLOWED_PER_BYTE * len(blob) + ALLOWED_CONSTANT
    assert peak <= allowed, f"parsing {len(blob)} bytes allocated {peak} bytes"


def _mutated(kind: str) -> st.SearchStrategy[bytes]:
    valid = st.sampled_from(VALID[kind])

    def truncate(blob: bytes, data: st.DataObject) -> bytes:
        return blob[: data.draw(st.integers(0, len(blob) - 1))]

    def flip(blob: bytes, data: st.DataObject) -> bytes:
        out = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 3))):
            out[data.draw(st.integers(0, len(out) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(out)

    def forge_word(blob: bytes, data: st.DataObject) -> bytes:
        # A header count or length set to anything, e.g. 2**32 - 1 rows in a 40-byte blob.
        at = data.draw(st.sampled_from([4, 8, 12, 32])) if len(blob) >= 36 else 0
        word = data.draw(
            st.sampled_from([0, 1, 2, 0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1)
        )
        return blob[:at] + struct.pack("<I", word) + blob[at + 4 :]

    return st.builds(
        lambda blob, how, data: how(blob, data),
        valid,
        st.sampled_from([truncate, flip, forge_word]),
        st.data(),
    )


@pytest.mark.parametrize("kind", sorted(PARSERS))
@FUZZ
@given(blob=st.binary(max_size=512))
def test_random_bytes_raise_only_model_format_errors(kind: str, blob: bytes) -> None:
    parse_only_format_errors(kind, blob)


@pytest.mark.parametrize("kind", sorted(PARSERS))
@FUZZ
@given(data=st.data())
def test_damaged_valid_records_raise_only_model_format_errors(
    kind: str, data: st.DataObject
) -> None:
    parse_only_format_errors(kind, data.draw(_mutated(kind)))


@pytest.mark.parametrize("magic", [b"FLDL", b"FLFM", b"FLRS"])
@FUZZ
@given(rest=st.binary(min_size=12, max_size=64))
def test_a_valid_magic_on_random_bytes_raises_only_model_format_errors(
    magic: bytes, rest: bytes
) -> None:
    kind = {b"FLDL": "delta", b"FLFM": "base", b"FLRS": "rowset"}[magic]
    parse_only_format_errors(kind, magic + rest)


def test_a_32_byte_delta_claiming_billions_of_rows_is_refused_before_allocating() -> None:
    forged = struct.pack("<4sIIIdQI", b"FLDL", 1, 0xFFFFFFFF, 1000, 0.0, 0, 0)
    parse_only_format_errors("delta", forged)
    with pytest.raises(ModelFormatError, match="must be"):
        Delta.from_bytes(forged)
