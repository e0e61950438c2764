"""The event record and its JSON Lines / CSV files: round trips, validation, atomic writes."""

from __future__ import annotations

import pickle
from pathlib import Path

import orjson
import pytest

from fedlearn.data import BadRows, DataError, Event, MissingDataError, read_events, write_events


def _events() -> list[Event]:
    return [
        Event("e-1", "42", "318", "click", 964982703.0, {"hour": "21", "age": 0.3}),
        Event("e-2", "42", "1", "skip", 964982704.5, {}),
        Event("e-3", "7", "50", "click", 964982710.25, {"mobile": True, "n": 3}, "pred-9"),
    ]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["log.jsonl", "log.csv"])
def test_round_trip_keeps_every_field(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_events(path, _events()) == 3
    assert list(read_events(path)) == _events()


def test_jsonl_matches_the_contract_example(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    write_events(path, _events()[:1])
    assert orjson.loads(path.read_bytes()) == {
        "event_id": "e-1",
        "user": "42",
        "item": "318",
        "signal": "click",
        "ts": 964982703.0,
        "context": {"hour": "21", "age": 0.3},
        "prediction_id": None,
    }


def test_label_is_one_for_click_zero_for_skip() -> None:
    click, skip = _events()[0], _events()[1]
    assert (click.label, skip.label) == (1, 0)


def test_events_are_hashable_despite_a_dict_context() -> None:
    assert len(set(_events() + _events())) == 3


def test_missing_event_id_is_filled_with_stem_and_line(tmp_path: Path) -> None:
    lines = [
        '{"user": 42, "item": 318, "signal": "click", "ts": 1}',
        "",
        '{"event_id": "", "user": "a", "item": "b", "signal": "skip", "ts": 2.5}',
        '{"event_id": "x", "user": "a", "item": "b", "signal": "skip", "ts": 3}',
    ]
    events = list(read_events(_write_lines(tmp_path / "day1.jsonl", lines)))
    assert [e.event_id for e in events] == ["day1:1", "day1:3", "x"]
    # Integer ids are read as their decimal string; ts is a float; context defaults to {}.
    assert (events[0].user, events[0].item, events[0].ts, events[0].context) == (
        "42",
        "318",
        1.0,
        {},
    )


def test_csv_ids_count_the_header_as_line_one(tmp_path: Path) -> None:
    lines = [
        "user,item,signal,ts,context",
        '42,318,click,964982703,"{""hour"": ""21""}"',
        "7,1,skip,964982704.5,",
    ]
    events = list(read_events(_write_lines(tmp_path / "log.csv", lines)))
    assert [e.event_id for e in events] == ["log:2", "log:3"]
    assert events[0].context == {"hour": "21"}
    assert events[1].context == {}
    assert events[1].ts == 964982704.5


GOOD = {"user": "u", "item": "i", "signal": "click", "ts": 1.0}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**GOOD, "signal": "clik"}, "'signal' must be 'click' or 'skip', got 'clik'"),
        ({k: v for k, v in GOOD.items() if k != "ts"}, "missing 'ts'"),
        ({**GOOD, "ts": "yesterday"}, "'ts' must be a number, got 'yesterday'"),
        ({**GOOD, "ts": True}, "'ts' must be a number, got True"),
        ({**GOOD, "user": ""}, "'user' must be 1 to 128 characters, got 0"),
        ({**GOOD, "user": "x" * 129}, "'user' must be 1 to 128 characters, got 129"),
        ({**GOOD, "item": "a\tb"}, "'item' must be printable (no control characters)"),
        ({**GOOD, "user": "a\u2028b"}, "'user' must be printable"),  # as model.features rules
        ({**GOOD, "user": 3.5}, "'user' must be a string (or an integer), got 3.5"),
        ({**GOOD, "context": [1]}, "'context' must be an object, got [1]"),
        ({**GOOD, "context": {"hour": [21]}}, "'context.hour' must be a string, number or boolean"),
        ({**GOOD, "context": {"k" * 201: 1}}, "'context' name must be 1 to 200 characters"),
        ({**GOOD, "context": {"k" * 150: "v" * 60}}, "'context.kkk"),
        ({**GOOD, "prediction_id": 1.5}, "'prediction_id' must be a string"),
        ([1, 2], "an event must be an object, got [1, 2]"),
    ],
)
def test_a_bad_row_names_file_line_field_and_value(
    tmp_path: Path, row: object, message: str
) -> None:
    path = _write_lines(tmp_path / "events.jsonl", [orjson.dumps(GOOD).decode()] * 2)
    with path.open("ab") as handle:
        handle.write(orjson.dumps(row) + b"\n")
    reader = read_events(path)
    assert next(reader).user == "u"  # rows before the bad one are delivered
    with pytest.raises(DataError) as caught:
        list(reader)
    assert caught.value.path == str(path)
    assert caught.value.line == 3
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{path} line 3: ")


def test_invalid_json_is_a_bad_row(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "events.jsonl", ['{"user": "u", '])
    with pytest.raises(DataError, match=r"line 1: not valid JSON"):
        list(read_events(path))


def test_skip_bad_counts_rows_and_keeps_the_first_messages(tmp_path: Path) -> None:
    good = orjson.dumps(GOOD).decode()
    bad_rows = [orjson.dumps({**GOOD, "signal": f"s{i}"}).decode() for i in range(8)]
    path = _write_lines(tmp_path / "events.jsonl", [good, *bad_rows, good, "not json"])
    bad = BadRows(keep=3)
    events = list(read_events(path, skip_bad=True, bad=bad))
    assert [e.event_id for e in events] == ["events:1", "events:10"]
    assert bad.count == 9
    assert len(bad.messages) == 3
    assert bad.messages[0] == f"{path} line 2: 'signal' must be 'click' or 'skip', got 's0'"
    assert "and 6 more" in bad.summary()


def test_csv_header_without_required_column_fails_even_with_skip_bad(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "log.csv", ["user,item,signal", "a,b,click"])
    with pytest.raises(DataError, match=r"line 1: the CSV header lacks ts") as caught:
        list(read_events(path, skip_bad=True))
    assert caught.value.line == 1


def test_csv_bad_cells(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "log.csv",
        ["user,item,signal,ts,context", "a,b,click", "a,b,click,soon,", "a,b,click,1,{oops"],
    )
    bad = BadRows()
    assert list(read_events(path, skip_bad=True, bad=bad)) == []
    assert [m.split(": ", 1)[1] for m in bad.messages] == [
        "has 3 cells, the header has 5",
        "'ts' must be a number, got 'soon'",
        "'context' must be a JSON object, got '{oops'",
    ]


def test_unknown_suffix_and_missing_file_fail_before_reading(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown event file suffix '.txt'"):
        read_events(tmp_path / "events.txt")
    with pytest.raises(MissingDataError, match=r"no such file"):
        read_events(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("name", ["log.jsonl", "log.csv"])
def test_a_bad_event_leaves_the_old_file_untouched(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_events(path, _events())
    before = path.read_bytes()
    broken = Event("e-9", "u", "i", "clik", 1.0, {})
    with pytest.raises(DataError, match=r"event #4 \('e-9'\): 'signal' must be"):
        write_events(path, [*_events(), broken])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp file left


def test_writer_refuses_ids_of_the_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'user' must be a string, got 42"):
        write_events(tmp_path / "e.jsonl", [Event("e", 42, "i", "click", 1.0, {})])  # type: ignore[arg-type]
    assert not (tmp_path / "e.jsonl").exists()


def test_data_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(DataError("a.jsonl", 3, "bad")))
    assert (error.path, error.line, error.message, str(error)) == (
        "a.jsonl",
        3,
        "bad",
        "a.jsonl line 3: bad",
    )
