"""Convert a MovieLens download into a fedlearn dataset folder.

Three public layouts are recognised from the files present: ``ml-latest``/``ml-latest-small``
(CSV), ``ml-100k`` (tab and pipe separated, latin-1) and ``ml-1m`` (``::`` separated, latin-1).
A rating of 4 or more becomes a click, anything lower a skip: an explicit rating is the closest
public stand-in for "the user chose this". Events are sorted by (ts, user, item), which keeps
the log time-ordered and the output reproducible.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fedlearn.data.catalog import FeatureTable, Manifest, write_dataset
from fedlearn.data.errors import BadRows, DataError
from fedlearn.data.events import Event
from fedlearn.data.movielens_layouts import LAYOUTS, FileSpec, Layout, Row, rows

CLICK_THRESHOLD = 4.0
_CHUNK = 1 << 18  # events turned into Python objects at a time
LICENSE = (
    "MovieLens data by GroupLens Research, University of Minnesota: research use only, no "
    "commercial use without permission, redistribution (also of transformations) only under "
    "the same terms; see the README.txt of the source download."
)


def detect_layout(src: str | Path) -> Layout:
    """The layout whose required files are all in ``src`` (a folder)."""
    src = Path(src)
    if not src.is_dir():
        raise DataError(src, None, "no such folder; pass the unzipped MovieLens download")
    for layout in LAYOUTS:
        if all((src / spec.name).is_file() for spec in (layout.ratings, layout.items)):
            return layout
    wanted = "; ".join(f"{lay.ratings.name} + {lay.items.name} ({lay.name})" for lay in LAYOUTS)
    names = sorted(p.name for p in src.iterdir())
    found = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    raise DataError(
        src, None, f"is not a MovieLens folder: expected {wanted}; found {found or 'nothing'}"
    )


def convert_movielens(
    src: str | Path,
    out: str | Path,
    *,
    skip_bad: bool = False,
    bad: BadRows | None = None,
    progress: bool = False,
) -> Manifest:
    """Convert the MovieLens folder ``src`` into the dataset folder ``out``; return its manifest.

    A bad row raises :class:`DataError` naming the file and line, unless ``skip_bad``: then it
    is counted in ``bad`` and in the manifest's ``skipped_rows``. Nothing is written to ``out``
    until everything has been read and checked, and then the folder appears in one step.
    """
    src, out = Path(src), Path(out)
    layout = detect_layout(src)
    bad = bad if bad is not None else BadRows()
    items = _read_table(src, layout, layout.items, layout.parse_item, skip_bad, bad)
    users: FeatureTable = {}
    if layout.users and layout.parse_user and (src / layout.users.name).is_file():
        users = _read_table(src, layout, layout.users, layout.parse_user, skip_bad, bad)
    ratings = _read_ratings(src, layout, skip_bad, bad, progress)
    order = np.lexsort((ratings["item"], ratings["user"], ratings["ts"]))
    event_items = np.unique(ratings["item"])
    unknown = sum(str(i) not in items for i in event_items.tolist())
    events = _events(ratings, order)
    if progress:
        events = tqdm(events, total=len(order), desc="writing events", unit=" events", disable=None)
    return write_dataset(
        out,
        events,
        items=items,
        users=users,
        source=f"MovieLens {layout.name} ({src.name})",
        license=LICENSE,
        params={
            "layout": layout.name,
            "src": str(src.resolve()),
            "click_if_rating_ge": CLICK_THRESHOLD,
        },
        extra_counts={"skipped_rows": bad.count, "event_items_without_features": unknown},
    )


def _events(ratings: dict[str, np.ndarray], order: np.ndarray) -> Iterator[Event]:
    for lo in range(0, len(order), _CHUNK):
        # Convert a block at a time: Python objects for all of ml-latest would need gigabytes.
        block = order[lo : lo + _CHUNK]
        columns = zip(
            ratings["user"][block].tolist(),
            ratings["item"][block].tolist(),
            (ratings["rating"][block] >= CLICK_THRESHOLD).tolist(),
            ratings["ts"][block].astype(np.float64).tolist(),
            strict=True,
        )
        for user, item, click, ts in columns:
            yield Event(
                event_id=f"ml:{user}:{item}",
                user=str(user),
                item=str(item),
                signal="click" if click else "skip",
                ts=ts,
                context={},
            )


def _reject(error: DataError, skip_bad: bool, bad: BadRows) -> None:
    if not skip_bad:
        raise error
    bad.add(error)


def _read_table(
    src: Path,
    layout: Layout,
    spec: FileSpec,
    parser: Callable[[list[str]], Row],
    skip_bad: bool,
    bad: BadRows,
) -> FeatureTable:
    """Items or users: id -> features, first row of an id wins, a repeated id is a bad row."""
    path = src / spec.name
    table: FeatureTable = {}
    first: dict[str, int] = {}
    for line, fields in rows(path, spec, layout.encoding):
        try:
            key, features = parser(fields)
        except ValueError as exc:
            _reject(DataError(path, line, str(exc)), skip_bad, bad)
            continue
        if key in table:
            message = f"id {key} appears twice (first on line {first[key]})"
            _reject(DataError(path, line, message), skip_bad, bad)
            continue
        table[key] = features
        first[key] = line
    return table


def _read_ratings(
    src: Path, layout: Layout, skip_bad: bool, bad: BadRows, progress: bool
) -> dict[str, np.ndarray]:
    """The ratings as numpy columns (user, item, rating, ts, line), duplicates removed.

    Columns live in compact arrays rather than lists of objects, so ml-latest (tens of
    millions of ratings) converts in a few gigabytes at most.
    """
    columns = {"user": array("q"), "item": array("q"), "ts": array("q"), "line": array("q")}
    ratings = array("d")
    path = src / layout.ratings.name
    lines = rows(path, layout.ratings, layout.encoding)
    if progress:
        lines = tqdm(lines, desc=f"reading {path.name}", unit=" rows", disable=None)
    for line, fields in lines:
        try:
            user, item, rating, ts = layout.parse_rating(fields)
        except ValueError as exc:
            _reject(DataError(path, line, str(exc)), skip_bad, bad)
            continue
        columns["user"].append(user)
        columns["item"].append(item)
        columns["ts"].append(ts)
        columns["line"].append(line)
        ratings.append(rating)
    out = {name: np.frombuffer(col, dtype=np.int64) for name, col in columns.items()}
    out["rating"] = np.frombuffer(ratings, dtype=np.float64)
    keep = _first_of_each_pair(path, out, skip_bad, bad)
    return {name: col[keep] for name, col in out.items()}


def _first_of_each_pair(
    path: Path, cols: dict[str, np.ndarray], skip_bad: bool, bad: BadRows
) -> np.ndarray:
    """Row indices to keep: a second rating of the same (user, item) is a bad row.

    Two ratings of one pair would give two events with the same id ``ml:<user>:<item>``, and
    an event id must make a retry harmless, so we refuse (or skip) the later ones.
    """
    n = len(cols["user"])
    by_pair = np.lexsort((cols["line"], cols["item"], cols["user"]))
    users, items = cols["user"][by_pair], cols["item"][by_pair]
    repeat = np.zeros(n, dtype=bool)
    if n > 1:
        repeat[1:] = (users[1:] == users[:-1]) & (items[1:] == items[:-1])
    if not repeat.any():
        return np.arange(n)
    # For each repeated row, the first row of its pair: the last non-repeat at or before it.
    group_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(n)))
    lines = cols["line"]
    for pos in np.flatnonzero(repeat)[np.argsort(lines[by_pair][repeat], kind="stable")]:
        first_line = lines[by_pair[group_start[pos]]]
        message = (
            f"user {users[pos]} rated item {items[pos]} again (first on line {first_line}); "
            "each (user, item) pair may appear once"
        )
        _reject(DataError(path, int(lines[by_pair[pos]]), message), skip_bad, bad)
    return np.sort(by_pair[~repeat])
