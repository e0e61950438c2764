"""An item table of one's own, JSON Lines or CSV, read into the catalog the service loads.

JSON Lines: one ``{"item": id, "title": text?, "features": {name: number}}`` per line (the
dataset folder's ``items.jsonl`` is one). CSV: a header with an ``item`` column, an optional
``title`` column, and any other columns, each a categorical feature: a cell ``Drama|Comedy`` in
column ``genre`` gives ``{"genre=Drama": 1, "genre=Comedy": 1}`` (an empty cell gives none).
Every row is validated; the first bad one (or a second row for an id) stops the read with the
file and line, so a catalog with a mistake is never half loaded.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from fedlearn.data.errors import DataError, MissingDataError
from fedlearn.data.validate import check_features, check_id, show

ItemRecord = dict[str, Any]  # {"title": str | None, "features": {name: float}}
SUFFIXES = (".jsonl", ".ndjson", ".csv")
CSV_SEPARATOR = "|"


def read_items(path: str | Path) -> dict[str, ItemRecord]:
    """The items of ``path`` (``.jsonl``/``.ndjson`` or ``.csv``), id -> title and features."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(path, None, f"unknown item file suffix {path.suffix!r}; use {SUFFIXES}")
    if not path.is_file():
        raise MissingDataError(path, None, "no such file")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    items: dict[str, ItemRecord] = {}
    first_line: dict[str, int] = {}
    for line, row in rows:
        try:
            item, record = _record(row)
        except ValueError as exc:
            raise DataError(path, line, str(exc)) from None
        if item in items:
            raise DataError(
                path, line, f"item {item!r} appears twice (first on line {first_line[item]}); "
                "an item id may appear once",
            )  # fmt: skip
        items[item] = record
        first_line[item] = line
    if not items:
        raise DataError(path, None, "holds no item; a catalog needs at least one")
    return items


def _record(row: Any) -> tuple[str, ItemRecord]:
    if not isinstance(row, Mapping):
        raise ValueError(f"a row must be an object, got {show(row)}")
    if "item" not in row:
        raise ValueError("missing 'item' (a row is {'item': id, 'title': ..., 'features': ...})")
    title = row.get("title")
    if title is not None and not isinstance(title, str):
        raise ValueError(f"'title' must be a string, got {show(title)}")
    features = check_features(row.get("features") or {})
    return check_id(row["item"], "item"), {"title": title or None, "features": features}


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                yield line, orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise DataError(path, line, f"not valid JSON ({exc})") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "item" not in columns:
            raise DataError(path, 1, f"the header needs an 'item' column, got {columns}")
        extra = [c for c in columns if c not in ("item", "title")]
        for row in reader:
            if None in row:
                raise DataError(path, reader.line_num, "more cells than the header has columns")
            features = {
                f"{column}={value.strip()}": 1.0
                for column in extra
                for value in (row.get(column) or "").split(CSV_SEPARATOR)
                if value.strip()
            }
            yield reader.line_num, {
                "item": row["item"], "title": row.get("title") or None, "features": features
            }  # fmt: skip


def feature_table(items: Mapping[str, ItemRecord]) -> dict[str, dict[str, float]]:
    """Just the features, id -> {name: number} (what a dataset folder's items.jsonl holds)."""
    return {item: dict(record["features"]) for item, record in items.items()}
