"""Stream entries as the store hands them out: an id and the decoded event.

An entry holds one field, ``e``, with the event as orjson bytes; only this module encodes and
decodes it. An entry that cannot be decoded (deleted meanwhile, or written by something else)
is not raised on, which would wedge its shard forever: it comes back as ``Rejected`` (with its
raw payload) and the trainer dead-letters and acknowledges it with the rest of the batch.
``screen_events`` does the same for a shard stream's entries that decode but are no event the
trainer can apply (the API validated them; something else may have written to the stream).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fedlearn.data.validate import check_context
from fedlearn.store.keys import check_id

FIELD = b"e"
DELETED = "entry was deleted from the stream"
NO_FIELD = "entry has no field 'e'"


def encode(record: Mapping[str, Any]) -> bytes:
    """orjson bytes of a record; numpy scalars and arrays are accepted (predictions are)."""
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_id(raw: bytes | str) -> str:
    return raw.decode("ascii") if isinstance(raw, bytes) else raw


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry: ``id`` is the stream id (``"<ms>-<seq>"``), ``event`` the record."""

    id: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry that holds no decodable event; ``reason`` says why, ``raw`` is its payload."""

    id: str
    reason: str
    raw: bytes = b""


@dataclass(slots=True)
class Batch:
    """What one read returns: the good entries in stream order, and the rejected ones.

    ``ids`` lists every entry id of both kinds: pass it as ``entry_ids`` to ``commit_batch`` so
    that rejected entries are acknowledged too and never come back.
    """

    entries: list[Entry] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries] + [r.id for r in self.rejected]

    def extend(self, other: Batch) -> None:
        self.entries.extend(other.entries)
        self.rejected.extend(other.rejected)

    def __len__(self) -> int:
        return len(self.entries) + len(self.rejected)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)


def _decode(entry_id: bytes | str, payload: bytes | None, why_missing: str) -> Entry | Rejected:
    sid = decode_id(entry_id)
    if payload is None:
        return Rejected(sid, why_missing)
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return Rejected(sid, f"field 'e' is not JSON: {exc}", payload)
    if not isinstance(event, dict):
        return Rejected(sid, f"field 'e' is JSON {type(event).__name__}, not an object", payload)
    return Entry(sid, event)


def event_problem(event: Mapping[str, Any]) -> str | None:
    """Why a shard stream's entry is no event the trainer can apply, or None when it is one
    (an event, a ``forget`` or a ``rebase`` entry, as CONTRACTS.md defines them)."""
    try:
        check_id("user", event.get("user"))
        if event.get("type") == "forget":
            return None
        if event.get("type") == "rebase":
            share = event.get("share")
            if not isinstance(share, dict) or not {"w0", "features", "w", "v"} <= share.keys():
                return "a rebase entry needs a share {w0, features, w, v}"
            return None
        if "type" in event:
            return f"unknown entry type {event['type']!r}"
        check_id("item", event.get("item"))
        if event.get("prediction_id") is not None:
            check_id("prediction_id", event["prediction_id"])
    except (TypeError, ValueError) as exc:
        return str(exc)
    if event.get("signal") not in ("click", "skip"):
        return f"signal must be 'click' or 'skip', got {event.get('signal')!r}"
    try:
        # The model's own rules (bounds, reserved keys): an entry the API accepted under older
        # rules must be set aside here, not raise inside the batch and stop the trainer.
        check_context(event.get("context"))
    except ValueError as exc:
        return str(exc)
    return None


def screen_events(batch: Batch) -> Batch:
    """``batch`` with the entries that are no applicable event moved to ``rejected``."""
    kept = []
    for entry in batch.entries:
        problem = event_problem(entry.event)
        if problem is None:
            kept.append(entry)
        else:
            reason = f"invalid event: {problem}"
            batch.rejected.append(Rejected(entry.id, reason, encode(entry.event)))
    batch.entries = kept
    return batch


def _batch(items: list[Entry | Rejected]) -> Batch:
    batch = Batch()
    for item in items:
        (batch.entries if isinstance(item, Entry) else batch.rejected).append(item)  # type: ignore[arg-type]
    return batch


def parse_entries(raw: Any) -> Batch:
    """A ``Batch`` from redis-py's parsed entry list ``[(id, {field: value} | None), ...]``."""
    return _batch(
        [
            _decode(entry_id, (fields or {}).get(FIELD), DELETED if not fields else NO_FIELD)
            for entry_id, fields in raw or ()
        ]
    )


def parse_flat(flat: list[Any]) -> Batch:
    """A ``Batch`` from a script's ``[id1, payload1 | None, id2, ...]`` (see ``scripts.CLAIM``):
    ``None`` marks a deleted entry, ``b""`` one without an ``e`` field."""
    return _batch(
        [
            _decode(entry_id, payload or None, DELETED if payload is None else NO_FIELD)
            for entry_id, payload in zip(flat[::2], flat[1::2], strict=True)
        ]
    )


def parse_read(reply: Any) -> Batch:
    """The ``Batch`` of an XREADGROUP/XREAD reply on a single stream (RESP2 list or RESP3 map)."""
    if not reply:
        return Batch()
    if isinstance(reply, Mapping):
        streams = list(reply.values())
        return parse_entries(streams[0][0] if streams and streams[0] else [])
    return parse_entries(reply[0][1])
