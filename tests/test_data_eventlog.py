"""The event log's files: appended by day, read back in order, a torn last line cut off."""

from __future__ import annotations

from pathlib import Path

import orjson

from fedlearn.data.eventlog import (
    append_lines,
    cut_entry,
    day_of,
    expand,
    last_log_id,
    read_log,
    render_applied,
    shard_dir,
    stamp,
)
from fedlearn.store.applied import encode_entry, parse_applied


def _line(event_id: str, log_id: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "log_id": log_id}) + b"\n"


def test_lines_are_read_back_shard_by_shard_in_order(tmp_path: Path) -> None:
    append_lines(shard_dir(tmp_path, 1), {"2026-01-02": [_line("c", "3-0")]})
    append_lines(shard_dir(tmp_path, 0), {"2026-01-02": [_line("b", "2-0")]})
    append_lines(shard_dir(tmp_path, 0), {"2026-01-01": [_line("a", "1-0")]})
    assert [r["event_id"] for r in read_log(tmp_path)] == ["a", "b", "c"]
    assert (tmp_path / "shard=000" / "2026-01-01.jsonl").is_file()


def test_a_torn_last_line_is_cut_and_the_last_whole_one_found(tmp_path: Path) -> None:
    folder = shard_dir(tmp_path, 0)
    assert last_log_id(folder) is None
    append_lines(folder, {"2026-01-01": [_line("a", "1-0") + _line("b", "2-0")]})
    path = folder / "2026-01-01.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"event_id": "c", "lo')  # a crash in the middle of a write
    assert last_log_id(folder) == "2-0"
    assert path.read_bytes() == whole


def test_an_entrys_lines_are_cut_off_the_end_across_the_reads_chunks(tmp_path: Path) -> None:
    folder = shard_dir(tmp_path, 0)
    pad = "x" * 400  # 3,000 lines of each entry: more than the 1 MB read from the end at once
    first = b"".join(_line(f"a{i}{pad}", "1-0") for i in range(3000))
    second = b"".join(_line(f"b{i}{pad}", "2-0") for i in range(3000))
    append_lines(folder, {"2026-01-01": [first], "2026-01-02": [first + second]})
    assert cut_entry(folder, "2-0") == 3000
    assert (folder / "2026-01-02.jsonl").read_bytes() == first
    assert cut_entry(folder, "2-0") == 0, "nothing of it is left"
    assert cut_entry(folder, "1-0") == 3000  # a file of one entry is emptied, the older kept
    assert (folder / "2026-01-02.jsonl").read_bytes() == b""
    assert (folder / "2026-01-01.jsonl").read_bytes() == first
    assert cut_entry(folder, "1-0") == 3000, "the last file with lines"


# An applied batch in columns, as the trainer builds it (an event may name a field log_id, and
# hold text that is not ASCII).
BATCH = {
    "events": [{"event_id": "a", "log_id": "forged"}, {"event_id": "b", "title": "Amélie"}],
    "stream_id": ["1-0", "1-1"],
    "features": [{"item=1": 1.0}, {"item=2": 1.0}],
    "features_from": ["event", "prediction"],
    "prediction": [0.5, 0.25],
    "base_prediction": [0.4, 0.2],
    "base_version": "v1",
    "applied_at": 0.0,
}


def test_a_batch_expands_to_one_record_per_event() -> None:
    records = list(expand(BATCH))
    assert [r["event_id"] for r in records] == ["a", "b"]
    assert records[1]["features_from"] == "prediction" and records[1]["base_version"] == "v1"
    assert day_of(0.0) == "1970-01-01"


def test_how_an_item_was_shown_lands_on_its_line_and_batches_from_before_have_none() -> None:
    """The ``shown`` column (propensity, slot, policy) is added to each line; an applied batch
    logged before exploration existed has no such column and expands as it always did."""
    old = {
        "events": [{"event_id": "a", "propensity": 0.5}], "stream_id": ["1-0"],
        "features": [{}], "features_from": ["event"], "prediction": [0.5],
        "base_prediction": [0.5], "base_version": "v1", "applied_at": 0.0,
    }  # fmt: skip
    assert next(expand(old))["propensity"] == 0.5  # the event as sent
    shown = {"propensity": 0.25, "slot": 2, "policy": {"kind": "epsilon", "epsilon": 0.1}}
    (line,) = expand({**old, "shown": [shown]})
    assert {key: line[key] for key in shown} == shown  # the record's values win


def test_rendered_lines_stamped_with_their_log_id_are_the_expanded_records() -> None:
    expected = [{**record, "log_id": "7-0"} for record in expand(BATCH)]
    # The applied log holds the rendered entry (a header, then its lines as they are); the
    # writer reads it back and stamps it.
    rendered = render_applied(BATCH)
    (entry,) = parse_applied([(b"7-0", {b"e": encode_entry(rendered)})]).entries
    assert entry.event == rendered
    text, n = stamp(entry.event, "7-0")
    assert [orjson.loads(line) for line in text.splitlines()] == expected and n == 2
    assert text.endswith(b"}\n")  # each line ends with its newline, the last one too
    # An entry written while the lines were one JSON string stamps to the same bytes.
    as_text = orjson.dumps({**rendered, "lines": rendered["lines"].decode("utf-8")})
    (older,) = parse_applied([(b"7-0", {b"e": as_text})]).entries
    assert stamp(older.event, "7-0") == stamp(entry.event, "7-0")
    # An entry an older trainer wrote (columns) gives the same lines' records.
    text, n = stamp(BATCH, "7-0")
    assert [orjson.loads(line) for line in text.splitlines()] == expected and n == 2


def test_lines_appended_to_the_events_own_text_are_the_records_lines_byte_for_byte() -> None:
    """With each event's JSON text as read (the ``raw`` column), a plain event's line is its
    text with the trainer's fields appended: the bytes the record would have encoded to. An
    event holding a key a line adds (a client's own propensity too) or text that is not a bare
    object falls back to the record, so no key ever appears twice."""
    import numpy as np

    events = [
        {"event_id": "a", "user": "u", "item": "1", "context": {"hour": "21", "t": 0.25}},
        {"event_id": "b", "title": "Amélie", "ts": 1.7e9},
        {"event_id": "c", "prediction": 0.9},  # a key the line adds: the record's value wins
        {"event_id": "d", "log_id": "forged"},
        {"event_id": "e", "propensity": 0.5},  # shown with something known (below)
        {"event_id": "f"},  # text with trailing whitespace, as another writer may leave it
    ]
    raw = [orjson.dumps(e) for e in events[:5]] + [b'{"event_id": "f"}\n']
    n = len(events)
    batch = {
        "events": events, "stream_id": [f"1-{i}" for i in range(n)],
        "features": [{"item=1": 1.0, "hour=21": 1.0}] * n, "features_from": ["event"] * n,
        "prediction": [0.5, np.float64(0.125), 0.3, 0.1, 0.2, 0.7],
        "base_prediction": [0.4] * n, "base_version": "v1", "applied_at": 1.5,
        "shown": [{}, {}, {}, {}, {"propensity": 0.25}, {}],
    }  # fmt: skip
    without_raw = render_applied(batch)["lines"]
    assert render_applied({**batch, "raw": raw})["lines"] == without_raw
    assert render_applied({**batch, "raw": [b""] * n})["lines"] == without_raw
    records = [orjson.loads(line) for line in without_raw.split(b"\n")]
    assert records[2]["prediction"] == 0.3 and "log_id" not in records[3]


def test_a_batch_of_plain_events_encoded_column_by_column_gives_the_records_bytes() -> None:
    """When every event keeps its own text, the columns are encoded a whole list at a time
    and split; the lines must be the records' bytes, whatever the floats, and a stream id
    holding a comma (which would split wrongly) must not change that."""
    import numpy as np

    rng = np.random.default_rng(7)
    n = 200
    events = [
        {"event_id": f"e{i}", "user": "u", "ts": float(rng.uniform(0, 2e9))} for i in range(n)
    ]
    p = rng.uniform(0, 1, n) ** 9  # tiny ones too (exponent notation)
    batch = {
        "events": events, "raw": [orjson.dumps(e) for e in events],
        "stream_id": [f"17{i}-{i}" for i in range(n - 1)] + ['1,"2'],
        "features": [{f"item={i}": 1.0, 'odd,"name': float(i)} for i in range(n)],
        "features_from": ["event"] * n, "prediction": p.tolist(),
        "base_prediction": [np.float64(x) for x in p[::-1]], "base_version": "v1",
        "applied_at": 1.5,
    }  # fmt: skip
    expected = render_applied({**batch, "raw": [b""] * n})["lines"]  # record by record
    assert render_applied(batch)["lines"] == expected
    batch["stream_id"][-1] = "9-9"  # every column split from one encoding
    assert render_applied(batch)["lines"] == render_applied({**batch, "raw": [b""] * n})["lines"]


def test_ranked_events_shown_with_a_policy_keep_their_text_and_give_the_records_bytes() -> None:
    """Events naming a ranking get how they were shown (propensity, slot, policy, and the
    candidates on the slot-0 item's line) after their own text: the same bytes as the record,
    whether every line of the batch is appended to or some line falls back to the record."""
    import numpy as np

    policy = {"kind": "epsilon", "epsilon": 0.1}
    candidates = [{"item": "1", "features": {"item=1": 1.0}}, {"item": "2", "features": {}}]
    shown = [
        {"propensity": 0.925, "slot": 0, "policy": policy, "candidates": candidates},
        {"propensity": np.float64(0.05), "slot": 1, "policy": policy},
        {},  # a plain event between ranked ones
        {"propensity": 1.0, "slot": 3, "policy": {"kind": "greedy"}},
    ]
    n = len(shown)
    events = [
        {"event_id": f"e{i}", "user": "u", "item": str(i), "prediction_id": "p1"} for i in range(n)
    ]
    events[2].pop("prediction_id")
    batch = {
        "events": events, "raw": [orjson.dumps(e) for e in events],
        "stream_id": [f"1-{i}" for i in range(n)],
        "features": [{"item=1": 1.0, "hour=21": 1.0}] * n, "features_from": ["prediction"] * n,
        "prediction": [0.5, 0.25, 0.3, 0.1], "base_prediction": [0.4] * n,
        "base_version": "v1", "applied_at": 1.5, "shown": shown,
    }  # fmt: skip
    expected = render_applied({**batch, "raw": [b""] * n})["lines"]  # record by record
    assert render_applied(batch)["lines"] == expected
    assert orjson.loads(expected.split(b"\n")[0])["candidates"] == candidates
    # one event holding a key a line adds sends the batch line by line: the same bytes still
    forged = {**batch, "events": [*events, {"event_id": "x", "slot": 9}]}
    forged["raw"] = [orjson.dumps(e) for e in forged["events"]]
    for column in ("stream_id", "features", "features_from", "prediction", "base_prediction"):
        forged[column] = [*batch[column], batch[column][0]]
    forged["shown"] = [*shown, {"propensity": 0.5, "slot": 1, "policy": policy}]
    by_record = render_applied({**forged, "raw": [b""] * (n + 1)})["lines"]
    assert render_applied(forged)["lines"] == by_record
