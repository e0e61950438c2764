"""The canonical event record and its two file forms, JSON Lines and CSV.

An event is one impression and its outcome: ``user`` saw ``item`` at ``ts`` and clicked or
skipped it. Readers validate every row against docs/CONTRACTS.md and report the file and line
of the first bad one (or count them with ``skip_bad=True``); writers validate every event and
replace the file in one step, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from fedlearn.data.atomic import atomic_file
from fedlearn.data.errors import BadRows, DataError, MissingDataError
from fedlearn.data.validate import (
    ContextValue,
    check_context,
    check_id,
    check_number,
    check_signal,
    show,
)

Format = Literal["jsonl", "csv"]
CSV_COLUMNS = ("event_id", "user", "item", "signal", "ts", "context", "prediction_id")
REQUIRED = ("user", "item", "signal", "ts")
_SUFFIXES: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


@dataclass(frozen=True, slots=True)
class Event:
    """One impression and its outcome. Build from untrusted data with :meth:`from_dict`.

    The constructor itself does not validate, so code that makes millions of events it already
    trusts (the synthetic generator, the MovieLens converter) pays nothing; writers re-check.
    """

    event_id: str
    user: str
    item: str
    signal: str
    ts: float
    # A dict is not hashable; leaving it out of the hash keeps events usable in sets.
    context: dict[str, ContextValue] = field(hash=False)
    prediction_id: str | None = None

    @property
    def label(self) -> int:
        """The training target: 1 for a click, 0 for a skip."""
        return 1 if self.signal == "click" else 0

    @classmethod
    def from_dict(cls, row: Any, *, default_id: str | None = None) -> Event:
        """Validate one decoded row; ``default_id`` fills a missing or empty ``event_id``.

        Keys other than the contract's are ignored, so an event log that also carries the
        features and the prediction made can be read back as plain events.
        """
        if not isinstance(row, Mapping):
            raise ValueError(f"an event must be an object, got {show(row)}")
        missing = [key for key in REQUIRED if key not in row]
        if missing:
            names = ", ".join(repr(key) for key in missing)
            raise ValueError(f"missing {names} (an event needs user, item, signal and ts)")
        raw_id = row.get("event_id")
        if raw_id is None or raw_id == "":
            if default_id is None:
                raise ValueError("'event_id' is required here")
            raw_id = default_id
        prediction_id = row.get("prediction_id")
        if prediction_id is not None:
            prediction_id = check_id(prediction_id, "prediction_id")
        return cls(
            event_id=check_id(raw_id, "event_id"),
            user=check_id(row["user"], "user"),
            item=check_id(row["item"], "item"),
            signal=check_signal(row["signal"]),
            ts=check_number(row["ts"], "ts"),
            context=check_context(row.get("context")),
            prediction_id=prediction_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, keys in contract order."""
        return {
            "event_id": self.event_id,
            "user": self.user,
            "item": self.item,
            "signal": self.signal,
            "ts": self.ts,
            "context": self.context,
            "prediction_id": self.prediction_id,
        }

    def check(self) -> Event:
        """Raise ``ValueError`` if a field breaks the contract (for events built directly).

        Unlike :meth:`from_dict` nothing is converted: an integer ``user`` is an error here.
        """
        for name in ("event_id", "user", "item", "prediction_id"):
            value = getattr(self, name)
            if value is None and name == "prediction_id":
                continue
            if type(value) is not str:
                raise ValueError(f"{name!r} must be a string, got {show(value)}")
            check_id(value, name)
        check_signal(self.signal)
        check_number(self.ts, "ts")
        if not isinstance(self.context, dict):
            raise ValueError(f"'context' must be a dict, got {show(self.context)}")
        check_context(self.context)
        return self


def format_of(path: str | Path) -> Format:
    """``"jsonl"`` or ``"csv"`` from the file suffix; anything else is an error."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        known = ", ".join(sorted(_SUFFIXES))
        raise DataError(path, None, f"unknown event file suffix {suffix!r}; use one of {known}")
    return _SUFFIXES[suffix]


def read_events(
    path: str | Path, *, skip_bad: bool = False, bad: BadRows | None = None
) -> Iterator[Event]:
    """Yield the events of a JSON Lines or CSV file, in file order, validated.

    A bad row raises :class:`DataError` naming the file and line, unless ``skip_bad``: then it
    is counted in ``bad`` (pass a :class:`BadRows` to see how many and the first messages).
    The file and its format are checked now; rows are read lazily as you iterate.
    """
    path = Path(path)
    fmt = format_of(path)
    if not path.is_file():
        raise MissingDataError(path, None, "no such file")
    rows = _jsonl_rows(path) if fmt == "jsonl" else _csv_rows(path)
    return _events(path, rows, skip_bad, bad if bad is not None else BadRows())


def _events(
    path: Path, rows: Iterator[tuple[int, Any]], skip_bad: bool, bad: BadRows
) -> Iterator[Event]:
    stem = path.stem
    for line, row in rows:
        try:
            if isinstance(row, ValueError):
                raise row
            event = Event.from_dict(row, default_id=f"{stem}:{line}")
        except ValueError as exc:
            error = DataError(path, line, str(exc))
            if not skip_bad:
                raise error from None
            bad.add(error)
            continue
        yield event


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded object or the ValueError saying why it is not JSON)."""
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, 1):
            if line == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a BOM some editors add
            if not raw.strip():
                continue  # blank lines (a trailing newline, a hand edit) carry no event
            try:
                yield line, orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield line, ValueError(f"not valid JSON ({exc})")


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, row as a dict with ts and context decoded, or a ValueError)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            raise DataError(
                path,
                1,
                f"the CSV header lacks {', '.join(missing)}; it needs {', '.join(REQUIRED)} "
                f"(event_id, context, prediction_id optional), got {', '.join(header)}",
            )
        for cells in reader:
            line = reader.line_num
            if not cells:
                continue
            if len(cells) != len(header):
                yield line, ValueError(f"has {len(cells)} cells, the header has {len(header)}")
                continue
            try:
                yield line, _decode_csv_row(dict(zip(header, cells, strict=True)))
            except ValueError as exc:
                yield line, exc


def _decode_csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """Turn CSV text cells into the JSON types the contract expects."""
    ts = row["ts"]
    try:
        row["ts"] = float(ts)
    except ValueError:
        raise ValueError(f"'ts' must be a number, got {show(ts)}") from None
    context = row.get("context")
    if context:
        try:
            row["context"] = orjson.loads(context)
        except orjson.JSONDecodeError:
            raise ValueError(f"'context' must be a JSON object, got {show(context)}") from None
    for key in ("event_id", "context", "prediction_id"):
        if row.get(key) == "":
            row[key] = None
    return row


def write_events(path: str | Path, events: Iterable[Event], *, fmt: Format | None = None) -> int:
    """Write events to a JSON Lines or CSV file atomically; return how many were written.

    Every event is validated on the way; if one is bad, or the iterable raises, the target
    file is left as it was. ``fmt`` defaults to the suffix of ``path``.
    """
    path = Path(path)
    fmt = fmt or format_of(path)
    with atomic_file(path, "wb" if fmt == "jsonl" else "w") as handle:
        if fmt == "jsonl":
            return _write_jsonl(path, handle, events)
        return _write_csv(path, handle, events)


def _checked(path: Path, index: int, event: Event) -> Event:
    if not isinstance(event, Event):
        raise DataError(path, None, f"event #{index} is not an Event, got {show(event)}")
    try:
        return event.check()
    except ValueError as exc:
        raise DataError(
            path, None, f"event #{index} ({event.event_id!r}): {exc}; nothing was written"
        ) from None


def _write_jsonl(path: Path, handle: Any, events: Iterable[Event]) -> int:
    count = 0
    for count, event in enumerate(events, 1):
        # orjson serializes the slotted dataclass directly, in field (contract) order.
        handle.write(orjson.dumps(_checked(path, count, event), option=orjson.OPT_APPEND_NEWLINE))
    return count


def _write_csv(path: Path, handle: Any, events: Iterable[Event]) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for count, event in enumerate(events, 1):
        _checked(path, count, event)
        context = orjson.dumps(event.context).decode() if event.context else ""
        writer.writerow(
            (
                event.event_id,
                event.user,
                event.item,
                event.signal,
                repr(event.ts),
                context,
                event.prediction_id or "",
            )
        )
    return count
