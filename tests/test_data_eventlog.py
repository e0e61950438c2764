"""The event log's files: appended by day, read back in order, a torn last line cut off."""

from __future__ import annotations

from pathlib import Path

import orjson

from fedlearn.data.eventlog import append_lines, day_of, expand, last_log_id, read_log, shard_dir


def _line(event_id: str, log_id: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "log_id": log_id})


def test_lines_are_read_back_shard_by_shard_in_order(tmp_path: Path) -> None:
    append_lines(shard_dir(tmp_path, 1), {"2026-01-02": [_line("c", "3-0")]})
    append_lines(shard_dir(tmp_path, 0), {"2026-01-02": [_line("b", "2-0")]})
    append_lines(shard_dir(tmp_path, 0), {"2026-01-01": [_line("a", "1-0")]})
    assert [r["event_id"] for r in read_log(tmp_path)] == ["a", "b", "c"]
    assert (tmp_path / "shard=000" / "2026-01-01.jsonl").is_file()


def test_a_torn_last_line_is_cut_and_the_last_whole_one_found(tmp_path: Path) -> None:
    folder = shard_dir(tmp_path, 0)
    assert last_log_id(folder) is None
    append_lines(folder, {"2026-01-01": [_line("a", "1-0"), _line("b", "2-0")]})
    path = folder / "2026-01-01.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"event_id": "c", "lo')  # a crash in the middle of a write
    assert last_log_id(folder) == "2-0"
    assert path.read_bytes() == whole


def test_a_batch_expands_to_one_record_per_event() -> None:
    batch = {
        "events": [{"event_id": "a"}, {"event_id": "b"}],
        "stream_id": ["1-0", "1-1"],
        "features": [{"item=1": 1.0}, {"item=2": 1.0}],
        "features_from": ["event", "prediction"],
        "prediction": [0.5, 0.25],
        "base_prediction": [0.4, 0.2],
        "base_version": "v1",
        "applied_at": 0.0,
    }
    records = list(expand(batch))
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
