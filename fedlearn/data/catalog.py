"""The dataset folder: item catalog, optional user table, manifest, and the events beside them.

A folder made by ``fedlearn datasets ... --out DIR`` holds ``events.jsonl`` (time-ordered),
``items.jsonl`` and optionally ``users.jsonl`` (``{"item": id, "features": {name: number}}``),
and ``dataset.json`` (where the data came from, counts, time range, license note). Training,
replay and the benchmarks all read it through :class:`Dataset`, so the layout lives here only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from fedlearn.data.atomic import atomic_file, atomic_folder
from fedlearn.data.errors import BadRows, DataError, MissingDataError
from fedlearn.data.events import Event, read_events, write_events
from fedlearn.data.validate import check_features, check_id, check_number, show

EVENTS_FILE = "events.jsonl"
ITEMS_FILE = "items.jsonl"
USERS_FILE = "users.jsonl"
MANIFEST_FILE = "dataset.json"
MANIFEST_FORMAT = 1
MAKE_ONE = "make one with `fedlearn datasets movielens SRC --out {dir}` (or `datasets synthetic`)"

FeatureTable = dict[str, dict[str, float]]
TableKey = Literal["item", "user"]


def read_table(path: str | Path, key: TableKey) -> FeatureTable:
    """Read ``items.jsonl`` (``key="item"``) or ``users.jsonl`` (``key="user"``), validated.

    Every line is ``{key: id, "features": {name: number}}``; an id may appear only once.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(path, None, "no such file")
    table: FeatureTable = {}
    first_line: dict[str, int] = {}
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                row = orjson.loads(raw)
                if not isinstance(row, Mapping):
                    raise ValueError(f"a row must be an object, got {show(row)}")
                if key not in row:
                    raise ValueError(f"missing {key!r} (a row is {{{key!r}: id, 'features': ...}})")
                name = check_id(row[key], key)
                features = check_features(row.get("features") or {})
            except orjson.JSONDecodeError as exc:
                raise DataError(path, line, f"not valid JSON ({exc})") from None
            except ValueError as exc:
                raise DataError(path, line, str(exc)) from None
            if name in table:
                raise DataError(
                    path, line, f"{key} {name!r} appears twice (first on line {first_line[name]})"
                )
            table[name] = features
            first_line[name] = line
    return table


def write_table(path: str | Path, key: TableKey, table: Mapping[str, Mapping[str, float]]) -> int:
    """Write a feature table atomically (rows sorted by id, so output is reproducible)."""
    path = Path(path)
    rows = []
    for name in sorted(table):
        try:
            rows.append({key: check_id(name, key), "features": check_features(table[name])})
        except ValueError as exc:
            raise DataError(path, None, f"{key} {name!r}: {exc}; nothing was written") from None
    with atomic_file(path, "wb") as handle:
        for row in rows:
            handle.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    return len(rows)


@dataclass(frozen=True)
class Manifest:
    """``dataset.json``: provenance and summary of a dataset folder.

    ``counts`` has at least ``events``, ``clicks``, ``skips``, ``users`` and ``items``;
    ``params`` records how the folder was made (converter layout, generator seed, ...).
    """

    source: str
    license: str
    counts: dict[str, int]
    first_ts: float | None
    last_ts: float | None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "source": self.source,
            "license": self.license,
            "counts": self.counts,
            "time_range": {"first_ts": self.first_ts, "last_ts": self.last_ts},
            "params": self.params,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, Mapping):
            raise ValueError(f"the manifest must be an object, got {show(data)}")
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(
                f"'format' must be {MANIFEST_FORMAT}, got {show(data.get('format'))}; "
                "remake the folder with this version of fedlearn"
            )
        counts = data.get("counts")
        if not isinstance(counts, Mapping) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in counts.values()
        ):
            raise ValueError(f"'counts' must be an object of name -> integer, got {show(counts)}")
        span = data.get("time_range") or {}
        first, last = span.get("first_ts"), span.get("last_ts")
        return cls(
            source=str(data.get("source", "")),
            license=str(data.get("license", "")),
            counts=dict(counts),
            first_ts=None if first is None else check_number(first, "time_range.first_ts"),
            last_ts=None if last is None else check_number(last, "time_range.last_ts"),
            params=dict(data.get("params") or {}),
        )


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(path, None, "no such file")
    try:
        return Manifest.from_dict(orjson.loads(path.read_bytes()))
    except orjson.JSONDecodeError as exc:
        raise DataError(path, None, f"not valid JSON ({exc})") from None
    except ValueError as exc:
        raise DataError(path, None, str(exc)) from None


def write_manifest(path: str | Path, manifest: Manifest) -> None:
    with atomic_file(path, "wb") as handle:
        handle.write(orjson.dumps(manifest.to_dict(), option=orjson.OPT_INDENT_2))
        handle.write(b"\n")


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset folder: catalog and manifest in memory, events read on demand.

    Events stay on disk because a real log can be far larger than memory; call
    :meth:`events` for a fresh iterator each pass (``list(ds.events())`` when it fits).
    """

    path: Path
    items: FeatureTable
    users: FeatureTable
    manifest: Manifest

    @classmethod
    def load(cls, folder: str | Path) -> Dataset:
        folder = Path(folder)
        if not folder.is_dir():
            raise MissingDataError(folder, None, "no such folder; " + MAKE_ONE.format(dir=folder))
        for required in (EVENTS_FILE, ITEMS_FILE, MANIFEST_FILE):
            if not (folder / required).is_file():
                raise MissingDataError(
                    folder / required, None, "no such file; " + MAKE_ONE.format(dir=folder)
                )
        users_path = folder / USERS_FILE
        return cls(
            path=folder,
            items=read_table(folder / ITEMS_FILE, "item"),
            users=read_table(users_path, "user") if users_path.is_file() else {},
            manifest=read_manifest(folder / MANIFEST_FILE),
        )

    @property
    def events_path(self) -> Path:
        return self.path / EVENTS_FILE

    def events(self, *, skip_bad: bool = False, bad: BadRows | None = None) -> Iterator[Event]:
        """The events in file (time) order; see :func:`read_events` for ``skip_bad``."""
        return read_events(self.events_path, skip_bad=skip_bad, bad=bad)


class _Tally:
    """Counts events on their way to the file and checks they are time-ordered."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events = self.clicks = 0
        self.users: set[str] = set()
        self.items: set[str] = set()
        self.first_ts: float | None = None
        self.last_ts: float | None = None

    def watch(self, events: Iterable[Event]) -> Iterator[Event]:
        for event in events:
            if self.last_ts is not None and event.ts < self.last_ts:
                raise DataError(
                    self.path,
                    None,
                    f"events must be in time order: event {event.event_id!r} has ts {event.ts} "
                    f"after ts {self.last_ts}; sort them by ts first",
                )
            if self.first_ts is None:
                self.first_ts = event.ts
            self.last_ts = event.ts
            self.events += 1
            self.clicks += event.signal == "click"
            self.users.add(event.user)
            self.items.add(event.item)
            yield event


def write_dataset(
    out: str | Path,
    events: Iterable[Event],
    *,
    items: Mapping[str, Mapping[str, float]],
    users: Mapping[str, Mapping[str, float]] | None = None,
    source: str,
    license: str,
    params: Mapping[str, Any] | None = None,
    extra_counts: Mapping[str, int] | None = None,
    extra_files: Mapping[str, Iterable[bytes]] | None = None,
) -> Manifest:
    """Write a complete dataset folder at ``out`` in one step and return its manifest.

    The folder is built in a temporary sibling and renamed into place, so ``out`` is either
    the old folder or the complete new one. ``events`` must be time-ordered; they are
    validated and counted as they stream to disk, so they need not fit in memory.
    ``extra_files`` (file name -> its lines, newline-terminated) are written into the same
    folder before it is renamed into place.
    """
    out = Path(out)
    with atomic_folder(out, is_ours=MANIFEST_FILE) as building:
        tally = _Tally(out / EVENTS_FILE)
        try:
            write_events(building / EVENTS_FILE, tally.watch(events))
        except DataError as exc:
            # Name the file the user asked for, not our temporary folder.
            raise DataError(out / EVENTS_FILE, exc.line, exc.message) from None
        write_table(building / ITEMS_FILE, "item", items)
        if users:
            write_table(building / USERS_FILE, "user", users)
        for name, lines in (extra_files or {}).items():
            with (building / name).open("wb") as handle:
                handle.writelines(lines)
        counts = {
            "events": tally.events,
            "clicks": tally.clicks,
            "skips": tally.events - tally.clicks,
            "users": len(tally.users),
            "items": len(items),
            "event_items": len(tally.items),
            "users_with_features": len(users or {}),
            **(extra_counts or {}),
        }
        manifest = Manifest(
            source=source,
            license=license,
            counts=counts,
            first_ts=tally.first_ts,
            last_ts=tally.last_ts,
            params=dict(params or {}),
        )
        write_manifest(building / MANIFEST_FILE, manifest)
    return manifest
