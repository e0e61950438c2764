"""The three MovieLens file layouts: where each field is, and how a row becomes our data.

Kept apart from the converter so that supporting another layout means adding one
:class:`Layout` here and nothing else. Parsers raise ``ValueError`` naming the field and the
value; the converter adds the file and line.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fedlearn.data.errors import DataError
from fedlearn.data.validate import show

Fields = list[str]
Rating = tuple[int, int, float, int]  # user, item, rating, ts
Row = tuple[str, dict[str, float]]  # id, features


@dataclass(frozen=True)
class FileSpec:
    """One file of a layout: its name, separator (``"csv"`` for quoted CSV) and header."""

    name: str
    sep: str
    n_fields: int
    header: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Layout:
    name: str
    encoding: str
    ratings: FileSpec
    items: FileSpec
    users: FileSpec | None
    parse_rating: Callable[[Fields], Rating]
    parse_item: Callable[[Fields], Row]
    parse_user: Callable[[Fields], Row] | None


def rows(path: Path, spec: FileSpec, encoding: str) -> Iterator[tuple[int, Fields]]:
    """(line number, fields) of every non-blank data row; a wrong header stops everything."""
    with path.open(newline="" if spec.sep == "csv" else None, encoding=encoding) as handle:
        if spec.sep == "csv":
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is not None and tuple(header) != spec.header:
                expected = ",".join(spec.header or ())
                raise DataError(path, 1, f"header must be {expected!r}, got {','.join(header)!r}")
            for cells in reader:
                if cells:
                    yield reader.line_num, cells
            return
        for line, text in enumerate(handle, 1):
            text = text.rstrip("\r\n")
            if text.strip():
                yield line, text.split(spec.sep)


def _count(fields: Fields, spec: FileSpec, what: str) -> None:
    if len(fields) != spec.n_fields:
        raise ValueError(f"has {len(fields)} fields, expected {spec.n_fields} ({what})")


def _int(text: str, field: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{field!r} must be a whole number, got {show(text)}")
    return int(text)


def _rating(text: str, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.5 <= value <= 5.0:
        raise ValueError(f"{field!r} must be a number from 0.5 to 5, got {show(text)}")
    return value


def _rating_row(names: tuple[str, str, str, str], spec: FileSpec) -> Callable[[Fields], Rating]:
    what = ", ".join(names)

    def parse(fields: Fields) -> Rating:
        _count(fields, spec, what)
        return (
            _int(fields[0], names[0]),
            _int(fields[1], names[1]),
            _rating(fields[2], names[2]),
            _int(fields[3], names[3]),
        )

    return parse


def _genres(names: list[str]) -> dict[str, float]:
    # "(no genres listed)" (ml-latest) and "unknown" (ml-100k) say nothing about the film.
    return {f"genre={g}": 1.0 for g in names if g and g not in ("(no genres listed)", "unknown")}


# ml-1m age codes: each is the lower end of its bucket (1 = under 18). ml-100k's exact ages are
# bucketed the same way so that both layouts produce the same `age=<bucket>` features.
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)


def age_bucket(age: int) -> int:
    """The ml-1m code of an exact age: 23 -> 18 (18-24), 60 -> 56 (56+), 12 -> 1 (under 18)."""
    return max((b for b in AGE_BUCKETS[1:] if b <= age), default=AGE_BUCKETS[0])


def _gender(text: str) -> str:
    if text not in ("M", "F"):
        raise ValueError(f"'gender' must be 'M' or 'F', got {show(text)}")
    return text


# --- ml-latest / ml-latest-small (UTF-8 CSV with headers) ---------------------------------
LATEST_RATINGS = FileSpec("ratings.csv", "csv", 4, ("userId", "movieId", "rating", "timestamp"))
LATEST_ITEMS = FileSpec("movies.csv", "csv", 3, ("movieId", "title", "genres"))


def _latest_item(fields: Fields) -> Row:
    _count(fields, LATEST_ITEMS, "movieId, title, genres")
    return str(_int(fields[0], "movieId")), _genres(fields[2].split("|"))


# --- ml-100k (latin-1; u.data tab separated, u.item and u.user pipe separated) -------------
ML100K_RATINGS = FileSpec("u.data", "\t", 4)
ML100K_ITEMS = FileSpec("u.item", "|", 24)
ML100K_USERS = FileSpec("u.user", "|", 5)
# The 19 genre flags of u.item, in file order (as listed in u.genre and the ml-100k README).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def _ml100k_item(fields: Fields) -> Row:
    _count(fields, ML100K_ITEMS, "movie id, title, release dates, URL, 19 genre flags")
    flags = fields[5:]
    if any(flag not in ("0", "1") for flag in flags):
        raise ValueError(f"genre flags must be 0 or 1, got {show('|'.join(flags))}")
    chosen = [genre for genre, flag in zip(ML100K_GENRES, flags, strict=True) if flag == "1"]
    return str(_int(fields[0], "movie id")), _genres(chosen)


def _ml100k_user(fields: Fields) -> Row:
    _count(fields, ML100K_USERS, "user id, age, gender, occupation, zip code")
    occupation = fields[3].strip()
    if not occupation:
        raise ValueError("'occupation' is empty")
    features = {
        f"age={age_bucket(_int(fields[1], 'age'))}": 1.0,
        f"gender={_gender(fields[2])}": 1.0,
        f"occupation={occupation}": 1.0,
    }
    return str(_int(fields[0], "user id")), features


# --- ml-1m (latin-1, "::" separated) --------------------------------------------------------
ML1M_RATINGS = FileSpec("ratings.dat", "::", 4)
ML1M_ITEMS = FileSpec("movies.dat", "::", 3)
ML1M_USERS = FileSpec("users.dat", "::", 5)
# Occupation codes of users.dat, as listed in the ml-1m README.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip


def _ml1m_item(fields: Fields) -> Row:
    _count(fields, ML1M_ITEMS, "MovieID, Title, Genres")
    return str(_int(fields[0], "MovieID")), _genres(fields[2].split("|"))


def _ml1m_user(fields: Fields) -> Row:
    _count(fields, ML1M_USERS, "UserID, Gender, Age, Occupation, Zip-code")
    age = _int(fields[2], "Age")
    if age not in AGE_BUCKETS:
        raise ValueError(f"'Age' must be one of {', '.join(map(str, AGE_BUCKETS))}, got {age}")
    occupation = _int(fields[3], "Occupation")
    if occupation >= len(ML1M_OCCUPATIONS):
        raise ValueError(f"'Occupation' must be 0 to {len(ML1M_OCCUPATIONS) - 1}, got {occupation}")
    features = {
        f"age={age}": 1.0,
        f"gender={_gender(fields[1])}": 1.0,
        f"occupation={ML1M_OCCUPATIONS[occupation]}": 1.0,
    }
    return str(_int(fields[0], "UserID")), features


def _layout(
    name: str,
    encoding: str,
    files: tuple[FileSpec, FileSpec, FileSpec | None],
    rating_names: tuple[str, str, str, str],
    parse_item: Callable[[Fields], Row],
    parse_user: Callable[[Fields], Row] | None,
) -> Layout:
    ratings, items, users = files
    parse_rating = _rating_row(rating_names, ratings)
    return Layout(name, encoding, ratings, items, users, parse_rating, parse_item, parse_user)


# Each release's names for the rating columns (the errors quote them).
LAYOUTS: tuple[Layout, ...] = (
    _layout("ml-latest", "utf-8", (LATEST_RATINGS, LATEST_ITEMS, None),
            ("userId", "movieId", "rating", "timestamp"), _latest_item, None),
    _layout("ml-100k", "latin-1", (ML100K_RATINGS, ML100K_ITEMS, ML100K_USERS),
            ("user id", "item id", "rating", "timestamp"), _ml100k_item, _ml100k_user),
    _layout("ml-1m", "latin-1", (ML1M_RATINGS, ML1M_ITEMS, ML1M_USERS),
            ("UserID", "MovieID", "Rating", "Timestamp"), _ml1m_item, _ml1m_user),
)  # fmt: skip
