"""Stream entries as the store hands them out: an id and the decoded event.

An entry holds one field, ``e``, with the event as orjson bytes; only this module encodes and
decodes it. An entry that cannot be decoded (deleted meanwhile, or written by something else)
is not raised on, which would wedge its shard forever: it comes back as ``Rejected`` (with its
raw payload) and the trainer dead-letters and acknowledges it with the rest of the batch.
``screen_events`` does the same for a shard stream's entries that decode but are no event the
trainer can apply (the API validated them; something else may have written to the stream).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, repeat
from operator import itemgetter
from types import NoneType
from typing import Any, NamedTuple

import orjson

from fedlearn.data.validate import check_context
from fedlearn.store.keys import MAX_ID_LEN, check_id

FIELD = b"e"
DELETED = "entry was deleted from the stream"
NO_FIELD = "entry has no field 'e'"


def encode(record: Mapping[str, Any]) -> bytes:
    """orjson bytes of a record; numpy scalars and arrays are accepted (predictions are)."""
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_id(raw: bytes | str) -> str:
    return raw.decode("ascii") if isinstance(raw, bytes) else raw


class Entry(NamedTuple):
    """One stream entry: ``id`` is the stream id (``"<ms>-<seq>"``), ``event`` the record,
    ``raw`` its JSON text as read when the reader kept it (the event log's line starts from
    it, ``data.eventlog.render_applied``), else ``b""``.

    A named tuple rather than a frozen dataclass: one is made per event on the trainer's hot
    path, and a tuple is built in C."""

    id: str
    event: dict[str, Any]
    raw: bytes = b""


class Rejected(NamedTuple):
    """An entry that holds no decodable event; ``reason`` says why, ``raw`` is its payload."""

    id: str
    reason: str
    raw: bytes = b""


# Entry and Rejected fields by position, and an Entry made in C from an (id, event, raw)
# tuple: the bulk paths below build and read one per event without a Python call.
_ID, _EVENT = itemgetter(0), itemgetter(1)
_new_entry = partial(tuple.__new__, Entry)


@dataclass(slots=True)
class Batch:
    """What one read returns: the good entries in stream order, and the rejected ones.

    ``ids`` lists every entry id of both kinds: pass it as ``entry_ids`` to ``commit_batch`` so
    that rejected entries are acknowledged too and never come back.

    ``users``, ``items`` and ``prediction_ids`` are the good entries' fields of those names
    (None where an entry has none), in entry order: ``screen_events`` fills them, as it reads
    them anyway, so that the trainer needs no pass of its own over the entries.
    """

    entries: list[Entry] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    users: list[str] | None = None
    items: list[str | None] | None = None
    prediction_ids: list[str | None] | None = None

    @property
    def ids(self) -> list[str]:
        return list(map(_ID, self.entries)) + list(map(_ID, self.rejected))

    def extend(self, other: Batch) -> None:
        self.entries.extend(other.entries)
        self.rejected.extend(other.rejected)
        self.users = self.items = self.prediction_ids = None  # screened again

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
    return Entry(sid, event, bytes(payload))


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


SIGNALS = ("click", "skip")
_SIGNAL_SET = frozenset(SIGNALS)
_CHECKED_PAIRS: dict[tuple[str, Any], None] = {}  # context (name, value) pairs that passed
_MAX_CHECKED_PAIRS = 4096  # a few hours, devices, pages; cleared when full


def _context_fine(context: Any) -> bool:
    """Whether ``context`` passes ``check_context``. Its rules hold for each (name, value)
    pair on its own, and a few pairs (hour, device) repeat across many events: the ones that
    passed are remembered."""
    if context is None:
        return True
    try:
        return _pairs_fine(set(context.items()))
    except (AttributeError, TypeError):  # not a mapping, or an unhashable value: check in full
        return False


def _pairs_fine(pairs: set[tuple[str, Any]]) -> bool:
    return all(map(_pair_fine, pairs - _CHECKED_PAIRS.keys()))


def _pair_fine(pair: tuple[str, Any]) -> bool:
    try:
        check_context(dict([pair]))
    except ValueError:
        return False
    if len(_CHECKED_PAIRS) >= _MAX_CHECKED_PAIRS:
        _CHECKED_PAIRS.clear()
    _CHECKED_PAIRS[pair] = None
    return True


def _plain(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` has the common shape that ``event_problem`` accepts, leaving only the
    control characters of its ids to check (``screen_events`` does that for the whole batch)."""
    user, item = event.get("user"), event.get("item")
    return (
        type(user) is str
        and type(item) is str
        and 0 < len(user) <= MAX_ID_LEN
        and 0 < len(item) <= MAX_ID_LEN
        and event.get("signal") in SIGNALS
        and "type" not in event
        and event.get("prediction_id") is None
        and _context_fine(event.get("context"))
    )


def _column(events: list[dict[str, Any]], name: str) -> list[Any]:
    return list(map(dict.get, events, repeat(name, len(events))))


def _ids_fine(*columns: list[str]) -> bool:
    """Whether every value of ``columns`` (strings) is 1..MAX_ID_LEN long and, as a batch
    usually is, all of them printable (stricter than the ids' rule: else decide one by one)."""
    lengths = set().union(*(map(len, column) for column in columns))
    return (
        min(lengths, default=1) > 0
        and max(lengths, default=0) <= MAX_ID_LEN
        and "".join(["".join(column) for column in columns]).isprintable()
    )


def _plain_columns(events: list[dict[str, Any]]) -> tuple[list[Any], ...] | None:
    """The users, items and prediction ids of ``events`` when every one is an event that
    ``event_problem`` accepts in the common way (``_plain``'s shape, or a prediction id),
    checked field by field over the whole batch with builtins that loop in C; None when any
    is not (the entries are then judged one by one)."""
    users, items, signals, pids, contexts = (
        _column(events, name) for name in ("user", "item", "signal", "prediction_id", "context")
    )
    if any(map(dict.__contains__, events, repeat("type"))):
        return None
    pid_types = set(map(type, pids)) - {NoneType}
    given = [p for p in pids if p is not None] if pid_types else []
    if not pid_types <= {str} or not set(map(type, contexts)) <= {dict, NoneType}:
        return None
    try:
        # A signal is one of two strings (an unhashable one raises); the ids' join and
        # lengths raise on anything but strings, so their types need no pass of their own.
        if not set(signals) <= _SIGNAL_SET or not _ids_fine(users, items, given):
            return None
        # None and {} both pass; the others by their (name, value) pairs, a few per batch
        pairs = set(chain.from_iterable(map(dict.items, filter(None, contexts))))
    except TypeError:  # an id that is no string, an unhashable value: check in full
        return None
    return (users, items, pids) if _pairs_fine(pairs) else None


def screen_events(batch: Batch) -> Batch:
    """``batch`` with the entries that are no applicable event moved to ``rejected``, and its
    ``users``, ``items`` and ``prediction_ids`` filled.

    A batch is usually all plain events: then it is checked field by field over all entries
    at once (``_plain_columns``). Otherwise each entry's shape is checked in one pass and the
    ids of all of them for control characters in one ``isprintable`` call over their
    concatenation. Any entry that is not plain, or every entry when that call finds
    something, goes through ``event_problem``, which names what is wrong.
    """
    entries = batch.entries
    columns = _plain_columns(list(map(_EVENT, entries)))
    if columns is not None:
        batch.users, batch.items, batch.prediction_ids = columns
        return batch
    plain = [_plain(e.event) for e in entries]
    ids = "".join(
        [e.event["user"] + e.event["item"] for e, ok in zip(entries, plain, strict=True) if ok]
    )
    if not ids.isprintable():  # stricter than the ids' rule: then decide one by one
        plain = [False] * len(entries)
    kept = []
    for entry, ok in zip(entries, plain, strict=True):
        problem = None if ok else event_problem(entry.event)
        if problem is None:
            kept.append(entry)
        else:
            reason = f"invalid event: {problem}"
            batch.rejected.append(Rejected(entry.id, reason, encode(entry.event)))
    batch.entries = kept
    batch.users = [e.event["user"] for e in kept]
    batch.items = [e.event.get("item") for e in kept]
    batch.prediction_ids = [e.event.get("prediction_id") for e in kept]
    return batch


def _batch(items: list[Entry | Rejected]) -> Batch:
    batch = Batch()
    for item in items:
        (batch.entries if isinstance(item, Entry) else batch.rejected).append(item)  # type: ignore[arg-type]
    return batch


def _payload(fields: Mapping[bytes, bytes] | list[bytes] | None) -> bytes | None:
    """The ``e`` field of an entry's fields, parsed (a dict) or as Redis sent them (a flat
    ``[field, value, ...]`` list); None when the entry was deleted or has no ``e``."""
    if not fields:
        return None
    if isinstance(fields, Mapping):
        return fields.get(FIELD)
    if len(fields) == 2 and fields[0] == FIELD:  # our entries: the one field
        return fields[1]
    return dict(zip(fields[::2], fields[1::2], strict=True)).get(FIELD)


_FIELD_NAME, _FIELD_VALUE = itemgetter(0), itemgetter(1)


def _parse_columns(raw: Sequence[Any]) -> list[Entry] | None:
    """The entries of ``raw`` when every one is ours as Redis sends it (a bytes id, fields
    ``[b"e", <a JSON object>]``), decoded with builtins that loop in C; None when any is not.

    Each payload is decoded on its own (``map(orjson.loads, ...)``), not as one JSON array of
    them all: a payload that is no single JSON value (``{"a": [1`` with ``2]}`` after it)
    could otherwise pair events with the wrong ids and texts."""
    try:
        ids, fields = zip(*raw, strict=True)
        if set(map(len, fields)) != {2} or set(map(_FIELD_NAME, fields)) != {FIELD}:
            return None
        payloads = list(map(_FIELD_VALUE, fields))
        if set(map(type, ids)) != {bytes} or set(map(type, payloads)) != {bytes}:
            return None
        events = list(map(orjson.loads, payloads))
        sids = list(map(bytes.decode, ids, repeat("ascii")))
    except (TypeError, ValueError, KeyError):  # orjson.JSONDecodeError is a ValueError
        return None
    if set(map(type, events)) != {dict}:
        return None
    return list(map(_new_entry, zip(sids, events, payloads, strict=True)))


def parse_entries(raw: Any) -> Batch:
    """A ``Batch`` from an entry list ``[(id, {field: value} | None), ...]``, as redis-py
    parses it, or with each entry's fields as Redis sent them (``[field, value, ...]``).

    The common case (every entry ours as Redis sends it) is decoded in bulk
    (``_parse_columns``); otherwise the common entry (a JSON object in ``e``) in one tight
    loop, and anything else goes through ``_decode``, which says precisely what is wrong."""
    entries = _parse_columns(raw) if raw else []
    if entries is not None:
        return Batch(entries)
    batch = Batch()
    good, loads = batch.entries.append, orjson.loads
    for entry_id, fields in raw or ():
        # Our entries as Redis sends them (one field ``e``, a JSON object, a bytes id) take no
        # function call besides the decode: this loop runs once per event read.
        if type(fields) is list and len(fields) == 2 and fields[0] == FIELD:
            try:
                event = loads(fields[1])
            except orjson.JSONDecodeError:
                event = None
            if type(event) is dict and type(entry_id) is bytes:
                good(Entry(entry_id.decode("ascii"), event, fields[1]))
                continue
        payload = _payload(fields)
        if payload is not None and payload[:1] == b"{":
            try:
                good(Entry(decode_id(entry_id), loads(payload), payload))
                continue
            except orjson.JSONDecodeError:
                pass
        item = _decode(entry_id, payload, DELETED if not fields else NO_FIELD)
        (batch.entries if isinstance(item, Entry) else batch.rejected).append(item)  # type: ignore[arg-type]
    return batch


def parse_flat(flat: list[Any]) -> Batch:
    """A ``Batch`` from a script's ``[id1, payload1 | None, id2, ...]`` (see ``scripts.CLAIM``):
    ``None`` marks a deleted entry, ``b""`` one without an ``e`` field."""
    return _batch(
        [
            _decode(entry_id, payload or None, DELETED if payload is None else NO_FIELD)
            for entry_id, payload in zip(flat[::2], flat[1::2], strict=True)
        ]
    )


def parse_read_many(reply: Any, *, raw: bool = False) -> dict[str, Batch]:
    """Each stream's ``Batch`` (by stream key) of an XREADGROUP/XREAD reply over several
    streams (RESP2 list of ``[key, entries]`` or RESP3 map); streams without entries are left
    out. ``raw``: the reply is as Redis sent it (``streams.raw_reads``), not as redis-py's
    callback reshapes a RESP3 map (each stream's entries wrapped in a list)."""
    if not reply:
        return {}
    pairs = reply.items() if isinstance(reply, Mapping) else ((key, e) for key, e in reply)
    out = {}
    for key, entries in pairs:
        if isinstance(reply, Mapping) and not raw:
            entries = entries[0] if entries else []
        if entries:
            out[decode_id(key)] = parse_entries(entries)
    return out
