"""Redis stream ids (``<ms>-<seq>``) as comparable values.

Ids must be compared as ``(ms, seq)`` integer pairs: as strings ``"9-0" > "10-0"``. The trainer
skips a redelivered entry whose id is ``<=`` the user's stored ``last_event``; that comparison
is what makes a redelivery harmless, so it lives here, once, with its tests.
"""

from __future__ import annotations

from typing import NamedTuple

_MAX_U64 = 2**64 - 1


class StreamId(NamedTuple):
    """A stream id; tuple order is stream order, so ``<``, ``max`` and ``sorted`` just work."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, value: str | bytes | StreamId) -> StreamId:
        """Parse ``"1700000000000-3"`` (str or bytes). A bare ``"17"`` means ``17-0``."""
        if isinstance(value, StreamId):
            return value
        text = value.decode("ascii") if isinstance(value, bytes | bytearray) else value
        if not isinstance(text, str):
            raise TypeError(f"stream id must be str or bytes, got {type(value).__name__}")
        ms_text, sep, seq_text = text.partition("-")
        if not sep:
            seq_text = "0"
        if not (ms_text.isdigit() and seq_text.isdigit() and ms_text.isascii()):
            raise ValueError(f"stream id must look like '<ms>-<seq>' with digits, got {text!r}")
        ms, seq = int(ms_text), int(seq_text)
        if ms > _MAX_U64 or seq > _MAX_U64:
            raise ValueError(f"stream id parts must fit 64 bits, got {text!r}")
        return cls(ms, seq)

    def next(self) -> StreamId:
        """The smallest id after this one (what ``XTRIM MINID`` needs to drop this one too)."""
        if self.seq < _MAX_U64:
            return StreamId(self.ms, self.seq + 1)
        return StreamId(self.ms + 1, 0)

    def previous(self) -> StreamId:
        """The largest id before this one (``0-0`` has none): reading after it reads this one."""
        if self.seq > 0:
            return StreamId(self.ms, self.seq - 1)
        if self.ms == 0:
            raise ValueError("0-0 is the first stream id: nothing comes before it")
        return StreamId(self.ms - 1, _MAX_U64)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


ZERO = StreamId(0, 0)


def compare_ids(a: str | bytes | StreamId, b: str | bytes | StreamId) -> int:
    """-1, 0 or 1 as ``a`` is before, equal to or after ``b`` in stream order."""
    x, y = StreamId.parse(a), StreamId.parse(b)
    return (x > y) - (x < y)


def already_applied(entry_id: str | bytes | StreamId, last_event: str | bytes | None) -> bool:
    """True when an entry was applied before: its id is ``<=`` the stored ``last_event``.

    ``last_event`` is ``None`` (or empty) for a user with no delta yet: nothing is applied.
    """
    if not last_event:
        return False
    return StreamId.parse(entry_id) <= StreamId.parse(last_event)
