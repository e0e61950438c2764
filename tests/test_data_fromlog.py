"""``fedlearn datasets from-eventlog`` on a real trainer's log, and ``datasets import`` of one's
own files; a torn last line or an unknown item stops them with the file and line, and nothing
is written."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from fedlearn.cli import main
from fedlearn.data.catalog import Dataset
from fedlearn.data.eventlog import read_log
from fedlearn.model import Base
from fedlearn.store import Store
from tests.test_evaluate_production import serve
from tests.test_trainer import make_events, publish


def run(*args: str):
    return CliRunner().invoke(main, [*map(str, args)])


def production_log(store: Store, folder: Path) -> Path:
    publish(store, Base.fresh([f"item={i}" for i in range(20)], 4, version="b1"))
    serve(store, make_events(300, 12, seed=4), folder)
    return folder


def test_the_event_log_becomes_a_dataset_that_train_base_and_replay_take(
    store: Store, tmp_path: Path
) -> None:
    log = production_log(store, tmp_path / "log")
    result = run("datasets", "from-eventlog", log, "--out", tmp_path / "ds")
    assert result.exit_code == 0, result.output
    dataset = Dataset.load(tmp_path / "ds")
    events = list(dataset.events())
    assert len(events) == 300 and dataset.manifest.counts["features_differ"] == 0
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    served = [orjson.loads(x) for x in (tmp_path / "ds" / "served.jsonl").read_bytes().splitlines()]
    logged = {r["event_id"]: r for r in read_log(log)}
    assert [s["event_id"] for s in served] == [e.event_id for e in events]
    for row in served:
        assert row["prediction"] == logged[row["event_id"]]["prediction"]
        assert row["features"] == logged[row["event_id"]]["features"]
    trained = run("train-base", tmp_path / "ds", "--out", tmp_path / "b.flfm", "--factors", 4,
                  "--epochs", 2, "--l2", 0.001)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    replayed = run("replay", tmp_path / "ds", "--arms", "frozen,clones", "--factors", 4)
    assert replayed.exit_code == 0 and "frozen" in replayed.output, replayed.output


def test_a_torn_last_line_is_named_and_nothing_is_written(store: Store, tmp_path: Path) -> None:
    log = production_log(store, tmp_path / "log")
    last = sorted(log.glob("shard=*/*.jsonl"))[-1]
    lines = last.read_bytes().count(b"\n")
    with last.open("ab") as handle:
        handle.write(b'{"event_id": "torn", "user": "u1", "it')
    result = run("datasets", "from-eventlog", log, "--out", tmp_path / "ds")
    assert result.exit_code == 1
    assert f"{last} line {lines + 1}: the last line is torn" in result.output
    assert "nothing was written" in result.output and not (tmp_path / "ds").exists()


def test_own_files_become_a_dataset_and_an_unknown_item_is_refused(tmp_path: Path) -> None:
    (tmp_path / "clicks.csv").write_text(
        "user,item,signal,ts\nann,m2,click,20\nann,m1,skip,10\nbob,m1,click,30\n"
    )
    (tmp_path / "items.csv").write_text("item,title,genre\nm1,One,Drama\nm2,Two,Drama|Comedy\n")
    result = run("datasets", "import", tmp_path / "clicks.csv", "--items",
                 tmp_path / "items.csv", "--out", tmp_path / "ds")  # fmt: skip
    assert result.exit_code == 0, result.output
    dataset = Dataset.load(tmp_path / "ds")
    assert [e.ts for e in dataset.events()] == [10, 20, 30]
    assert dataset.items["m2"] == {"genre=Drama": 1.0, "genre=Comedy": 1.0}
    (tmp_path / "more.csv").write_text("user,item,signal,ts\nann,m9,click,40\n")
    refused = run("datasets", "import", tmp_path / "more.csv", "--items",
                  tmp_path / "items.csv", "--out", tmp_path / "ds")  # fmt: skip
    assert refused.exit_code == 1 and "not in the item table" in refused.output
    assert len(list(Dataset.load(tmp_path / "ds").events())) == 3
