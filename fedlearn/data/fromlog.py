"""The production event log as a dataset folder, and one's own files as one.

:func:`dataset_from_eventlog` turns the trainers' event log (``fedlearn.data.eventlog``) into
the folder ``train-base`` and ``replay`` read: ``events.jsonl`` (the events, time-ordered),
``items.jsonl`` (each item's features as the service last trained on them: the logged
features less the ``user=``/``item=`` rows and the context's), and ``served.jsonl``, one line
per event in the same order with what the service did: the features it trained on, where they
came from, its prediction and the base's, the base version, and when known the policy, slot
and propensity the item was shown with (the manifest's ``with_propensity`` counts those), and
the ranking's candidates on a slot-0 line that has them.
The manifest also counts the events whose logged features the item table does not rebuild
(``features_differ``: the catalog changed, or a rank call carried its own features). A line
that is not JSON stops the conversion with its file and line; nothing is written.

:func:`dataset_from_files` makes the folder from an events file (CSV or JSON Lines) and an
item table (``fedlearn.data.items``): the first step of running the service on one's own data.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import orjson

from fedlearn.data.catalog import Manifest, write_dataset
from fedlearn.data.errors import DataError, MissingDataError
from fedlearn.data.eventlog import CANDIDATES, SHOWN_KEYS
from fedlearn.data.events import Event, read_events
from fedlearn.data.items import feature_table, read_items
from fedlearn.model import event_features

SERVED_FILE = "served.jsonl"
SERVED_KEYS = ("features", "features_from", "prediction", "base_prediction", "base_version")


def log_lines(
    root: Path, *, days: Collection[str] | None = None
) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """(file, line, record) of every line of an event log folder, shard by shard (only the
    files of ``days``, ``YYYY-MM-DD``, when given)."""
    files = sorted(root.glob("shard=*/*.jsonl"))
    if days is not None:
        files = [path for path in files if path.stem in days]
    if not files:
        raise MissingDataError(root, None, "holds no shard=*/*.jsonl files; is it an event log?")
    for path in files:
        with path.open("rb") as handle:
            for line, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    yield path, line, orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    torn = not raw.endswith(b"\n")
                    why = (
                        "the last line is torn (a trainer stopped mid-write); a trainer that "
                        "owns the shard cuts it off when it starts, or delete that line"
                        if torn
                        else f"not valid JSON ({exc})"
                    )
                    raise DataError(path, line, f"{why}; nothing was written") from None


def dataset_from_eventlog(root: str | os.PathLike[str], out: str | os.PathLike[str]) -> Manifest:
    """Write the dataset folder ``out`` from the event log folder ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise MissingDataError(root, None, "no such folder; pass the trainers' --eventlog folder")
    rows: list[tuple[float, int, Event, dict[str, Any]]] = []
    for path, line, record in log_lines(root):
        try:
            event = Event.from_dict(record)
            served = {key: record[key] for key in SERVED_KEYS}
            served.update((key, record[key]) for key in (*SHOWN_KEYS, CANDIDATES) if key in record)
        except KeyError as exc:
            raise DataError(path, line, f"lacks {exc}; not a line of the event log") from None
        except ValueError as exc:
            raise DataError(path, line, str(exc)) from None
        rows.append((event.ts, len(rows), event, {"event_id": event.event_id, **served}))
    rows.sort(key=lambda row: (row[0], row[1]))
    items: dict[str, dict[str, float]] = {}
    for _, _, event, served in rows:  # time order: the latest features of an item win
        own = event_features(event.user, event.item, event.context)
        items[event.item] = {k: v for k, v in served["features"].items() if k not in own}
    differ = sum(
        event_features(event.user, event.item, event.context, items[event.item])
        != served["features"]
        for _, _, event, served in rows
    )
    manifest = write_dataset(
        out, (event for _, _, event, _ in rows), items=items, source=f"eventlog:{root}",
        license="your own data", params={"eventlog": str(root.resolve())},
        extra_counts={"features_differ": differ,
                      "with_propensity": sum("propensity" in served for *_, served in rows)},
        extra_files={SERVED_FILE: (orjson.dumps(served, option=orjson.OPT_APPEND_NEWLINE)
                                   for _, _, _, served in rows)},
    )  # fmt: skip
    return manifest


def dataset_from_files(
    events: str | os.PathLike[str], items: str | os.PathLike[str], out: str | os.PathLike[str]
) -> Manifest:
    """Write the dataset folder ``out`` from an events file and an item table (time-ordered
    on the way: one's own export need not be)."""
    catalog = read_items(items)
    rows = sorted(read_events(events), key=lambda event: event.ts)
    unknown = sorted({e.item for e in rows} - set(catalog))
    if unknown:
        raise DataError(
            events, None, f"{len(unknown)} item(s) are not in the item table {items} "
            f"(first: {unknown[:3]}); add them, or drop their events",
        )  # fmt: skip
    return write_dataset(
        out, rows, items=feature_table(catalog), source=f"files:{Path(events).name}",
        license="your own data", params={"events": str(events), "items": str(items)},
    )  # fmt: skip
