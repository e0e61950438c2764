"""The event log's format: JSON Lines files partitioned by shard and by UTC day.

``<root>/shard=NNN/<YYYY-MM-DD>.jsonl``, one line per applied event (docs/CONTRACTS.md): the
event as sent, plus what the trainer saw (see :func:`expand`) and ``log_id``, the id of its
batch in the shard's applied stream. The trainer's writer (``fedlearn.trainer.eventlog``)
appends to these files; monthly training and ``fedlearn replay`` read them with
:func:`read_log`. This module knows the files, not Redis.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

import orjson

PARTITION = "shard={shard:03d}"
NUMPY = orjson.OPT_SERIALIZE_NUMPY  # a prediction may be a numpy scalar
# How an event's item came to be shown (model/policy.py), for off-policy evaluation.
SHOWN_KEYS = ("propensity", "slot", "policy")
# The ranking's candidates (``[{"item", "features"}]``, in the prediction record's order): on
# the line of the item shown in slot 0 only, the decision off-policy evaluation reweights.
CANDIDATES = "candidates"


def shard_dir(root: Path, shard: int) -> Path:
    """The folder of ``shard``'s files under ``root``."""
    return root / PARTITION.format(shard=shard)


def day_of(timestamp: float) -> str:
    """The file stem of an event applied at ``timestamp`` (its UTC day)."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def expand(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One record per event of an applied batch: the event as sent, plus what the trainer saw
    (``features``, where they came from, the clone's and the base's prediction before
    learning, the base version, the stream id and when it was applied), and how the item
    was shown when that is known (``propensity``, ``slot``, ``policy``, and ``candidates`` for
    the slot-0 item of a rank call; batches logged before exploration existed have no
    ``shown`` column)."""
    shown = batch.get("shown") or [{}] * len(batch["events"])
    columns = zip(
        batch["events"],
        batch["stream_id"],
        batch["features"],
        batch["features_from"],
        batch["prediction"],
        batch["base_prediction"],
        shown,
        strict=True,
    )
    for event, stream_id, features, source, prediction, base_prediction, how in columns:
        yield _record(batch, event, how, stream_id, features, source, prediction, base_prediction)


def _record(
    batch: dict[str, Any], event: dict[str, Any], how: dict[str, Any], *trained: Any
) -> dict[str, Any]:
    """One event's line of ``batch``: the event, how it was shown, then ``trained`` (stream
    id, features, their source, the clone's and the base's predictions), the base version
    and when the batch was applied."""
    stream_id, features, source, prediction, base_prediction = trained
    return {
        **event,
        **how,
        "stream_id": stream_id,
        "features": features,
        "features_from": source,
        "prediction": prediction,
        "base_prediction": base_prediction,
        "base_version": batch["base_version"],
        "applied_at": batch["applied_at"],
    }


# What a line adds to the event (and what the writer adds): an event holding none of these
# keys can have them appended to its own JSON text without a key appearing twice.
_ADDED = frozenset({
    "stream_id", "features", "features_from", "prediction", "base_prediction", "base_version",
    "applied_at", "log_id", CANDIDATES, *SHOWN_KEYS,
})  # fmt: skip


# An event's own JSON text (without its closing brace), how it was shown (``_shown_fields``),
# then what the trainer adds.
_APPENDED = (
    b'%s%s,"stream_id":%s,"features":%s,"features_from":%s,"prediction":%s,"base_prediction":%s%s'
)


def render_applied(batch: dict[str, Any]) -> dict[str, Any]:
    """An applied batch (columns, as :func:`expand` takes) as the applied log stores it: its
    events' lines already encoded, each without ``log_id`` (the id of the applied-log entry,
    known only once it is written; :func:`stamp` adds it), and ``applied_at``.

    The trainer encodes the lines once, in C, instead of the writer decoding the columns into
    objects and encoding them again (BENCHMARKS.md, "Trainer speed"). With a ``raw`` column
    (each event's JSON text as read from the stream, or ``b""``), an event shown with nothing
    known and holding none of the keys a line adds keeps its own text, and the trainer's
    fields are appended to it: the same keys and values as :func:`expand`'s record, without
    building and encoding that record. ``lines`` are bytes, stored as they are
    (``store.applied.encode_entry``).
    """
    n = len(batch["events"])
    raw = batch.get("raw") or [b""] * n
    shown = batch.get("shown") or [{}] * n
    tail = b',"base_version":%s,"applied_at":%s}' % (
        orjson.dumps(batch["base_version"]),
        orjson.dumps(batch["applied_at"], option=NUMPY),
    )
    if all(map(bytes.endswith, raw, repeat(b"}"))) and all(map(_ADDED.isdisjoint, batch["events"])):
        lines = _appended_lines(batch, raw, shown, tail)
    else:
        lines = _lines(batch, raw, shown, tail)
    return {"applied_at": batch["applied_at"], "lines": b"\n".join(lines)}


def _without_log_id(record: dict[str, Any]) -> dict[str, Any]:
    record.pop("log_id", None)  # an event field of that name is replaced by the writer's
    return record


def stamp(entry: dict[str, Any], log_id: str) -> tuple[bytes, int]:
    """The file text of an applied-log entry (:func:`render_applied`'s, or the columns an
    older trainer wrote): its lines, each with ``log_id`` set and ending with a newline; and
    how many there are. One piece of bytes per entry, not one per line: the writer hands it
    to the file as it is (:func:`append_lines`)."""
    if "lines" not in entry:
        lines = [orjson.dumps({**record, "log_id": log_id}) for record in expand(entry)]
    else:
        head = b'{"log_id":' + orjson.dumps(log_id) + b","
        text = entry["lines"]  # bytes; str in entries written before the applied log kept bytes
        if isinstance(text, str):
            text = text.encode("utf-8")
        lines = [head + line[1:] for line in text.split(b"\n")]
    n = len(lines)
    lines.append(b"")  # the last line's newline, in the same join
    return b"\n".join(lines) if n else b"", n


def append_lines(folder: Path, by_day: dict[str, list[bytes]]) -> None:
    """Append each day's text to its file in ``folder``, fsynced before returning (the caller
    trims the applied stream only after this). Each item of a day's list is whole lines, each
    ending with a newline (an entry's, :func:`stamp`'s).

    Each item is written as it is, in one write: a drain moves megabytes, and joining a whole
    drain's lines (then adding the last newline) copied every byte twice more into fresh
    memory, which cost the writer more CPU (page faults, in the kernel) than stamping the
    lines. A crash between two writes leaves whole entries, which the next writer resumes
    after (:func:`last_log_id`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for day, texts in sorted(by_day.items()):
        with (folder / f"{day}.jsonl").open("ab") as fh:
            for text in texts:
                fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def last_log_id(folder: Path) -> str | None:
    """The ``log_id`` of the last complete line in ``folder``'s files (None: no line yet),
    cutting off a torn last line a crash left."""
    files = sorted(folder.glob("*.jsonl")) if folder.exists() else []
    for path in reversed(files):
        line = _repair_and_read_last(path)
        if line is not None:
            return str(orjson.loads(line)["log_id"])
    return None


def cut_entry(folder: Path, log_id: str) -> int:
    """Cut the lines of applied-log entry ``log_id`` off the end of ``folder``'s last file
    that has lines (an entry's lines are written together, to one file); returns how many.

    A crash in the middle of writing an entry can leave a prefix of its lines: cut, the entry
    is written again whole (``trainer.eventlog``). Call after :func:`last_log_id`, which cuts
    a torn last line, so every line left ends with its newline."""
    for path in sorted(folder.glob("*.jsonl"), reverse=True) if folder.exists() else []:
        start, n = _trailing_lines_of(path, log_id)
        if n:
            with path.open("r+b") as fh:
                fh.truncate(start)
                os.fsync(fh.fileno())
        if path.stat().st_size or n:
            return n
    return 0


def _trailing_lines_of(path: Path, log_id: str) -> tuple[int, int]:
    """Where the run of ``log_id``'s lines that ends ``path`` starts, and how many it holds."""
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        offset, n = size, 0
        for start, data in _tails(fh, size, 1 << 20):
            lines = data.split(b"\n")[:-1]  # each line ends with a newline
            offset, n = size, 0
            for line in reversed(lines if start == 0 else lines[1:]):  # [0]: maybe a part
                if str(orjson.loads(line).get("log_id")) != log_id:
                    return offset, n
                offset, n = offset - len(line) - 1, n + 1
    return offset, n


def _repair_and_read_last(path: Path) -> bytes | None:
    """The last complete line of ``path``, cutting off a torn last line left by a crash.

    The cut matters: the next append would otherwise glue a new line to the torn one.
    """
    with path.open("r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        for start, data in _tails(fh, size, 1 << 16):
            cut = data.rfind(b"\n")
            if cut < 0 and start > 0:
                continue
            if start + cut + 1 != size:
                fh.truncate(start + cut + 1)
            lines = data[: cut + 1].rstrip(b"\n").rsplit(b"\n", 1)
            if lines[-1].strip() and (start == 0 or len(lines) == 2):
                return lines[-1]
    return None


def _tails(fh: BinaryIO, size: int, chunk: int) -> Iterator[tuple[int, bytes]]:
    """The last ``chunk`` bytes of the open file ``fh`` (``size`` long) as (offset, bytes),
    then twice as many each time, up to the whole file: its last lines, without reading all
    of a day's file."""
    while True:
        start = max(0, size - chunk)
        fh.seek(start)
        yield start, fh.read(size - start)
        if start == 0:
            return
        chunk *= 2


def read_log(root: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every record of an event log folder, shard by shard, each shard in apply order."""
    for folder in sorted(Path(root).glob("shard=*")):
        for path in sorted(folder.glob("*.jsonl")):
            yield from records(path)


def records(path: Path) -> Iterable[dict[str, Any]]:
    """The records of one file of the log, in order."""
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def _appended_lines(
    batch: dict[str, Any], raw: list[bytes], shown: list[dict[str, Any]], tail: bytes
) -> list[bytes]:
    """:func:`render_applied`'s lines when every event keeps its own text: each column
    encoded in one call where its values cannot contain the comma that splits them (stream
    ids, numbers; else one call per value), the lines formatted in one pass."""
    n = len(raw)
    sources = {source: orjson.dumps(source) for source in set(batch["features_from"])}
    return list(
        map(
            _APPENDED.__mod__,
            zip(
                map(itemgetter(slice(None, -1)), raw),
                _shown_fields(shown),
                _encoded(batch["stream_id"], n),
                map(orjson.dumps, batch["features"]),
                map(sources.__getitem__, batch["features_from"]),
                _encoded(batch["prediction"], n),
                _encoded(batch["base_prediction"], n),
                repeat(tail, n),
                strict=True,
            ),
        )
    )


def _shown_fields(shown: list[dict[str, Any]]) -> list[bytes]:
    """Each event's ``how`` as the members it adds after the event's own (``,"propensity":..``;
    ``b""`` when nothing is known): ``{**event, **how}`` of an event holding none of its keys."""
    if not any(shown):
        return [b""] * len(shown)
    return [b"," + orjson.dumps(how, option=NUMPY)[1:-1] if how else b"" for how in shown]


def _encoded(values: list[Any], n: int) -> list[bytes]:
    """Each of ``values`` as ``orjson.dumps`` gives it: split from one encoding of the list
    when that has exactly ``n - 1`` commas (none inside a value), else one by one."""
    parts = orjson.dumps(values, option=NUMPY)[1:-1].split(b",")
    if len(parts) == n and n:
        return parts
    return [orjson.dumps(value, option=NUMPY) for value in values]


def _lines(
    batch: dict[str, Any], raw: list[bytes], shown: list[dict[str, Any]], tail: bytes
) -> list[bytes]:
    """:func:`render_applied`'s lines, event by event."""
    lines = []
    columns = zip(
        raw, shown, batch["events"], batch["stream_id"], batch["features"],
        batch["features_from"], batch["prediction"], batch["base_prediction"], strict=True,
    )  # fmt: skip
    for text, how, event, stream_id, features, source, prediction, base_prediction in columns:
        if text[-1:] != b"}" or not _ADDED.isdisjoint(event):
            trained = (stream_id, features, source, prediction, base_prediction)
            record = _without_log_id(_record(batch, event, how, *trained))
            lines.append(orjson.dumps(record, option=NUMPY))
            continue
        lines.append(
            _APPENDED % (
                text[:-1], *_shown_fields([how]), orjson.dumps(stream_id), orjson.dumps(features),
                orjson.dumps(source),
                orjson.dumps(prediction, option=NUMPY),
                orjson.dumps(base_prediction, option=NUMPY), tail,
            )
        )  # fmt: skip
    return lines
