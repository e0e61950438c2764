"""A user's snapshot: the delta as it was when the user last contributed to a round.

A round aggregates each user's *change since the previous contribution*, so the bytes read
for a round must be kept: they become the user's new snapshot once the round's base version is
published. The stored value is a short ASCII prefix, ``<generation>|<ms>-<seq>|<events>|``,
followed by the ``.fldl`` bytes exactly as read. The prefix lets the promotion script in Redis
(``fedlearn.store.rounds``) compare two snapshots without decoding the delta: a snapshot only
ever moves forward in ``(generation, last_event)`` order, so a late or repeated promotion can
never bring an older one back.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedlearn.store.streamid import StreamId


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a round read of one user: the delta's bytes and where the user's stream stood."""

    generation: int
    last_event: StreamId
    events: int
    delta: bytes

    def to_bytes(self) -> bytes:
        head = f"{self.generation}|{self.last_event}|{self.events}|".encode("ascii")
        return head + self.delta

    @classmethod
    def from_bytes(cls, blob: bytes) -> Snapshot:
        parts = bytes(blob).split(b"|", 3)
        if len(parts) != 4:
            raise ValueError(
                f"snapshot does not start with '<generation>|<ms>-<seq>|<events>|': "
                f"{bytes(blob[:40])!r}"
            )
        generation, last_event, events, delta = parts
        try:
            return cls(int(generation), StreamId.parse(last_event), int(events), delta)
        except ValueError as exc:
            raise ValueError(
                f"snapshot prefix is malformed ({exc}): {bytes(blob[:40])!r}"
            ) from None

    @property
    def position(self) -> tuple[int, StreamId]:
        """The order in which snapshots of one user follow each other."""
        return (self.generation, self.last_event)
