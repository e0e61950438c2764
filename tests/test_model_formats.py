"""The base (.flfm) and delta (.fldl) binary formats: round trips and clear format errors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from fedlearn.model import Base, Clone, Delta, ModelFormatError


def _base() -> Base:
    rng = np.random.default_rng(0)
    names = ["user=1", "item=42", "genre=Drama", "hour", "item=é-ü"]  # non-ASCII names too
    return Base(
        names,
        -0.25,
        rng.normal(size=len(names)),
        rng.normal(size=(len(names), 3)),
        version="v7",
        init_seed=11,
        init_scale=0.05,
        hyper={"lr": 0.05},
        meta={"data": {"events": 10}},
    )


def _trained_delta(base: Base) -> Delta:
    clone = Clone(base, lr=0.1)
    for x, y in [({"user=1": 1.0, "item=42": 1.0}, 1), ({"user=1": 1.0, "item=new": 1.0}, 0)]:
        clone.learn_one(x, y)
    return clone.delta


def test_base_round_trip_keeps_everything() -> None:
    base = _base()
    blob = base.to_bytes()
    again = Base.from_bytes(blob)
    assert again.features == base.features
    assert again.version == "v7"
    assert (again.init_seed, again.init_scale) == (11, 0.05)
    assert again.hyper == {"lr": 0.05} and again.meta == {"data": {"events": 10}}
    assert again.w0 == base.w0
    np.testing.assert_array_equal(again.w, base.w)
    np.testing.assert_array_equal(again.v, base.v)
    assert again.to_bytes() == blob


def test_base_arrays_start_on_an_8_byte_boundary() -> None:
    blob = _base().to_bytes()
    (header_len,) = struct.unpack_from("<I", blob, 8)
    assert (16 + header_len) % 8 == 0


def test_base_save_and_load(tmp_path: Path) -> None:
    base = _base()
    path = base.save(tmp_path / "sub" / "model.flfm")
    assert Base.load(path).to_bytes() == base.to_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["model.flfm"]  # no temp file left


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:10], "shorter than its 16-byte prefix"),
        (lambda b: b"XXXX" + b[4:], "not a fedlearn base"),
        (lambda b: b[:4] + struct.pack("<I", 9) + b[8:], "format 9 is not supported"),
        (lambda b: b[:-4], "must be"),
        (lambda b: b + b"\0\0\0\0", "must be"),
        (lambda b: b[:16] + b"x" + b[17:], "header does not decode"),
    ],
)
def test_base_format_errors_say_what_is_wrong(mutate, message: str) -> None:
    # Format 1 has no checksum, so each structural check is reached.
    with pytest.raises(ModelFormatError, match=message):
        Base.from_bytes(mutate(base_as_format_1(_base().to_bytes())))


def base_as_format_1(blob: bytes) -> bytes:
    """A format-2 base rewritten as format 1 (no checksum): same layout, reserved word 0."""
    return blob[:4] + struct.pack("<I", 1) + blob[8:12] + b"\0\0\0\0" + blob[16:]


def delta_as_format_1(blob: bytes) -> bytes:
    """A format-2 delta rewritten as format 1 (no CRC-32 trailer)."""
    return blob[:4] + struct.pack("<I", 1) + blob[8:-4]


def test_format_1_files_are_still_read() -> None:
    base = _base()
    old = Base.from_bytes(base_as_format_1(base.to_bytes()))
    assert old.to_bytes() == base.to_bytes()
    delta = _trained_delta(base)
    assert Delta.from_bytes(delta_as_format_1(delta.to_bytes())).to_bytes() == delta.to_bytes()


@pytest.mark.parametrize("position", [0, 16, 100, -1])
def test_a_flipped_bit_fails_the_base_checksum(position: int) -> None:
    blob = bytearray(_base().to_bytes())
    blob[12 + 4 + position if position >= 0 else position] ^= 0x10
    with pytest.raises(ModelFormatError, match="checksum mismatch"):
        Base.from_bytes(bytes(blob))


def test_a_base_with_nan_is_refused() -> None:
    base = _base()
    blob = bytearray(base_as_format_1(base.to_bytes()))
    blob[-4:] = struct.pack("<f", float("nan"))
    with pytest.raises(ModelFormatError, match="non-finite"):
        Base.from_bytes(bytes(blob))


def test_delta_round_trip_binary_and_json() -> None:
    base = _base()
    delta = _trained_delta(base)
    assert "item=new" in delta.names and delta.n_events == 2
    again = Delta.from_bytes(delta.to_bytes())
    recency = list(delta.index)  # rows are stored least recently used first
    assert again.names == recency and list(again.index) == recency
    assert again.n_events == 2 and again.w0 == delta.w0
    w, v = delta.lookup(recency)
    np.testing.assert_array_equal(again.w, w)
    np.testing.assert_array_equal(again.v, v)
    assert again.to_bytes() == delta.to_bytes()
    from_json = Delta.from_json(delta.to_json(), base.n_factors)
    np.testing.assert_array_equal(from_json.v, v)
    assert from_json.names == recency


def test_empty_delta_round_trip() -> None:
    again = Delta.from_bytes(Delta(3).to_bytes())
    assert len(again) == 0 and again.w0 == 0.0 and again.n_factors == 3


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:20], "shorter than its header"),
        (lambda b: b"FLFM" + b[4:], "not a fedlearn delta"),
        (lambda b: b[:4] + struct.pack("<I", 3) + b[8:], "format 3 is not supported"),
        (lambda b: b[:-1], "must be"),
        (lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "checksum mismatch"),
        (lambda b: b[:8] + struct.pack("<I", 1 << 30) + b[12:], "must be"),
    ],
)
def test_delta_format_errors_say_what_is_wrong(mutate, message: str) -> None:
    blob = _trained_delta(_base()).to_bytes()
    with pytest.raises(ModelFormatError, match=message):
        Delta.from_bytes(mutate(blob))


def test_a_delta_is_far_smaller_than_the_base() -> None:
    rng = np.random.default_rng(0)
    names = [f"item={i}" for i in range(2000)]
    base = Base(names, 0.0, np.zeros(2000), rng.normal(size=(2000, 10)))
    clone = Clone(base)
    for i in range(20):
        clone.learn_one({"user=9": 1.0, f"item={i}": 1.0}, i % 2)
    assert len(clone.delta) == 21
    assert len(clone.delta.to_bytes()) * 50 < len(base.to_bytes())


@pytest.mark.parametrize("names", [[], ["a"], ["item=42", "genre=Drama"], ["é", "hour=21", "ü-3"]])
def test_delta_bytes_follow_the_documented_layout(names):
    """.fldl as CONTRACTS.md writes it out: header, each name and a newline, zeros up to a
    multiple of 4, float32 w then v, CRC-32 of everything before. Written here by hand, so a
    faster writer (``pack_delta``) cannot drift from it unnoticed."""
    k = 3
    delta = Delta.from_rows(k, names, np.arange(len(names)) / 4, np.ones((len(names), k)), 0.5)
    delta.n_events = 9
    block = b"".join(name.encode("utf-8") + b"\n" for name in names)
    block += b"\0" * (-(36 + len(block)) % 4)
    head = struct.pack("<4sIIIdQI", b"FLDL", 2, len(names), k, 0.5, 9, len(block))
    rows = np.asarray(delta.w, "<f4").tobytes() + np.asarray(delta.v, "<f4").tobytes()
    body = head + block + rows
    assert delta.to_bytes() == body + struct.pack("<I", zlib.crc32(body))
