"""The MovieLens converter on tiny hand-made folders in each of the three public layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fedlearn.cli import main
from fedlearn.data import BadRows, DataError, Dataset
from fedlearn.data.movielens import convert_movielens, detect_layout
from fedlearn.data.movielens_layouts import age_bucket

# The same four ratings in every layout: (user, item, rating, ts).
RATINGS = [(1, 10, 4, 100), (1, 20, 3, 90), (2, 10, 5, 100), (2, 30, 1, 80)]
# Sorted by (ts, user, item); rating >= 4 is a click.
EXPECTED = [
    ("ml:2:30", "2", "30", "skip", 80.0),
    ("ml:1:20", "1", "20", "skip", 90.0),
    ("ml:1:10", "1", "10", "click", 100.0),
    ("ml:2:10", "2", "10", "click", 100.0),
]


def _write(path: Path, lines: list[str], encoding: str = "utf-8") -> None:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))


def make_latest(src: Path) -> tuple[dict, dict]:
    src.mkdir()
    _write(
        src / "ratings.csv",
        ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r}.0,{t}" for u, i, r, t in RATINGS],
    )
    _write(
        src / "movies.csv",
        [
            "movieId,title,genres",
            '10,"Heat, The (1995)",Action|Crime',
            "20,Toy Story (1995),Animation|Children",
            "30,Nothing (2000),(no genres listed)",
        ],
    )
    items = {
        "10": {"genre=Action": 1.0, "genre=Crime": 1.0},
        "20": {"genre=Animation": 1.0, "genre=Children": 1.0},
        "30": {},
    }
    return items, {}


def _flags(*on: int) -> str:
    return "|".join("1" if g in on else "0" for g in range(19))


def make_100k(src: Path) -> tuple[dict, dict]:
    src.mkdir()
    _write(src / "u.data", [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in RATINGS])
    _write(
        src / "u.item",
        [
            f"10|Heat (1995)|01-Jan-1995||http://x|{_flags(1, 6)}",
            f"20|Toy Story (1995)|01-Jan-1995||http://x|{_flags(3, 4)}",
            f"30|Café (2000)|01-Jan-2000||http://x|{_flags(0)}",  # latin-1, only "unknown"
        ],
        encoding="latin-1",
    )
    _write(src / "u.user", ["1|23|M|technician|85711", "2|60|F|writer|94043"])
    items = {
        "10": {"genre=Action": 1.0, "genre=Crime": 1.0},
        "20": {"genre=Animation": 1.0, "genre=Children's": 1.0},
        "30": {},
    }
    users = {
        "1": {"age=18": 1.0, "gender=M": 1.0, "occupation=technician": 1.0},
        "2": {"age=56": 1.0, "gender=F": 1.0, "occupation=writer": 1.0},
    }
    return items, users


def make_1m(src: Path) -> tuple[dict, dict]:
    src.mkdir()
    _write(src / "ratings.dat", [f"{u}::{i}::{r}::{t}" for u, i, r, t in RATINGS])
    _write(
        src / "movies.dat",
        [
            "10::Heat (1995)::Action|Crime",
            "20::Toy Story (1995)::Animation|Children's",
            "30::Café (2000)::Drama",
        ],
        encoding="latin-1",
    )
    _write(src / "users.dat", ["1::M::18::17::85711", "2::F::56::20::94043"])
    items = {
        "10": {"genre=Action": 1.0, "genre=Crime": 1.0},
        "20": {"genre=Animation": 1.0, "genre=Children's": 1.0},
        "30": {"genre=Drama": 1.0},
    }
    users = {
        "1": {"age=18": 1.0, "gender=M": 1.0, "occupation=technician/engineer": 1.0},
        "2": {"age=56": 1.0, "gender=F": 1.0, "occupation=writer": 1.0},
    }
    return items, users


MAKERS = {"ml-latest": make_latest, "ml-100k": make_100k, "ml-1m": make_1m}


@pytest.mark.parametrize("layout", sorted(MAKERS))
def test_each_layout_converts_to_the_same_events(tmp_path: Path, layout: str) -> None:
    items, users = MAKERS[layout](tmp_path / "src")
    assert detect_layout(tmp_path / "src").name == layout
    manifest = convert_movielens(tmp_path / "src", tmp_path / "out")
    ds = Dataset.load(tmp_path / "out")
    got = [(e.event_id, e.user, e.item, e.signal, e.ts) for e in ds.events()]
    assert got == EXPECTED
    assert ds.items == items
    assert ds.users == users
    assert (tmp_path / "out" / "users.jsonl").exists() == bool(users)
    assert ds.manifest == manifest
    assert manifest.params["layout"] == layout
    assert manifest.counts["events"] == 4
    assert (manifest.counts["clicks"], manifest.counts["skips"]) == (2, 2)
    assert (manifest.counts["users"], manifest.counts["items"]) == (2, 3)
    assert (manifest.first_ts, manifest.last_ts) == (80.0, 100.0)
    assert "GroupLens" in manifest.license


AGES = [(7, 1), (17, 1), (18, 18), (24, 18), (25, 25), (49, 45), (50, 50), (55, 50), (56, 56)]


@pytest.mark.parametrize(("age", "bucket"), AGES)
def test_ml100k_ages_fall_into_ml1m_buckets(age: int, bucket: int) -> None:
    assert age_bucket(age) == bucket


def test_bad_rating_names_file_and_line(tmp_path: Path) -> None:
    make_latest(tmp_path / "src")
    with (tmp_path / "src" / "ratings.csv").open("a") as handle:
        handle.write("3,10,abc,120\n3,20,4.0,130\n")
    with pytest.raises(DataError) as caught:
        convert_movielens(tmp_path / "src", tmp_path / "out")
    assert caught.value.path == str(tmp_path / "src" / "ratings.csv")
    assert caught.value.line == 6
    assert caught.value.message == "'rating' must be a number from 0.5 to 5, got 'abc'"
    # Nothing was written, and no temporary folder was left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_skip_bad_counts_rows_in_every_file(tmp_path: Path) -> None:
    make_100k(tmp_path / "src")
    with (tmp_path / "src" / "u.data").open("a") as handle:
        handle.write("3\t10\t4\n3\t99\t9\t5\n1\t10\t2\t200\n")  # short row, rating 9, repeated pair
    with (tmp_path / "src" / "u.user").open("a") as handle:
        handle.write("3|40|X|none|0\n")
    bad = BadRows(keep=10)
    manifest = convert_movielens(tmp_path / "src", tmp_path / "out", skip_bad=True, bad=bad)
    assert bad.count == 4
    assert manifest.counts["skipped_rows"] == 4
    assert manifest.counts["events"] == 4  # the original four survive
    src = tmp_path / "src"
    assert bad.messages == [
        f"{src / 'u.user'} line 3: 'gender' must be 'M' or 'F', got 'X'",
        f"{src / 'u.data'} line 5: has 3 fields, expected 4 (user id, item id, rating, timestamp)",
        f"{src / 'u.data'} line 6: 'rating' must be a number from 0.5 to 5, got '9'",
        f"{src / 'u.data'} line 7: user 1 rated item 10 again (first on line 1); "
        "each (user, item) pair may appear once",
    ]


def test_a_wrong_header_stops_even_with_skip_bad(tmp_path: Path) -> None:
    make_latest(tmp_path / "src")
    _write(tmp_path / "src" / "ratings.csv", ["user,movie,rating,ts", "1,10,4.0,100"])
    with pytest.raises(DataError, match=r"ratings.csv line 1: header must be"):
        convert_movielens(tmp_path / "src", tmp_path / "out", skip_bad=True)


def test_a_folder_without_movielens_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(DataError, match=r"is not a MovieLens folder: expected ratings.csv \+ "):
        convert_movielens(tmp_path / "src", tmp_path / "out")


def test_out_is_replaced_only_when_it_is_a_dataset(tmp_path: Path) -> None:
    make_latest(tmp_path / "src")
    convert_movielens(tmp_path / "src", tmp_path / "out")
    (tmp_path / "out" / "stale.txt").write_text("from an older run")
    convert_movielens(tmp_path / "src", tmp_path / "out")  # ours: replaced as a whole
    assert not (tmp_path / "out" / "stale.txt").exists()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_text("meow")
    with pytest.raises(DataError, match=r"is not empty and has no dataset.json"):
        convert_movielens(tmp_path / "src", tmp_path / "photos")
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["cat.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos", "src"]


def test_loading_a_missing_folder_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such folder; make one with `fedlearn datasets"):
        Dataset.load(tmp_path / "none")
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match=r"half/events.jsonl: no such file; make one with"):
        Dataset.load(tmp_path / "half")


def test_cli_converts_and_reports_counts(tmp_path: Path) -> None:
    make_1m(tmp_path / "src")
    result = CliRunner().invoke(
        main, ["datasets", "movielens", str(tmp_path / "src"), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    assert "4 events (2 clicks, 2 skips), 2 users, 3 items, 2 users with features" in result.output
    assert len(list(Dataset.load(tmp_path / "out").events())) == 4


def test_cli_turns_a_bad_row_into_a_message_not_a_traceback(tmp_path: Path) -> None:
    make_1m(tmp_path / "src")
    with (tmp_path / "src" / "ratings.dat").open("a") as handle:
        handle.write("x::10::4::100\n")
    args = ["datasets", "movielens", str(tmp_path / "src"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "ratings.dat line 5: 'UserID' must be a whole number, got 'x'" in result.output
    assert "--skip-bad" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, [*args, "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad row:" in result.output


@pytest.mark.movielens
def test_real_ml_latest_small(tmp_path: Path, movielens_dir: Path) -> None:
    """``movielens_dir`` (tests/conftest.py) skips this test when the data is absent."""
    manifest = convert_movielens(movielens_dir, tmp_path / "ml")
    assert manifest.counts["events"] == 100836
    assert manifest.counts["items"] == 9742
    assert manifest.counts["users"] == 610
    ds = Dataset.load(tmp_path / "ml")
    times = [e.ts for e in ds.events()]
    assert times == sorted(times)
    assert ds.items["1"] == {
        f"genre={g}": 1.0 for g in ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    }
