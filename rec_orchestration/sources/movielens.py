"""MovieLens (GroupLens) ratings, movies and users in the 100K, 1M/10M and "latest" layouts.

- 100K: ``u.data`` (``user<TAB>item<TAB>rating<TAB>epoch``), ``u.item`` (``|``-separated: id, title,
  release date, video release date, IMDb URL, 19 genre flags; Latin-1), ``u.user``
  (``id|age|gender|occupation|zip``).
- 1M / 10M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat``
  (``MovieID::Title::Genres`` with ``|``-separated genres), ``users.dat`` (1M only:
  ``UserID::Gender::Age::Occupation::Zip-code`` with coded age and occupation). Latin-1 (1M) or
  UTF-8 (10M): lines are decoded as UTF-8 and fall back to Latin-1.
- latest: ``ratings.csv`` (``userId,movieId,rating,timestamp``, half stars) and ``movies.csv``
  (``movieId,title,genres``, quoted titles).

Ratings land in ``raw.reviews`` as ``event_type = 'rating'`` (0.5-5 stars), movies in
``raw.products`` (genres as categories), users in ``raw.users``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg.types.json import Jsonb

from rec_orchestration.sources.records import (
    AGES,
    LOWEST_RATING,
    InvalidFileError,
    InvalidRecord,
    Rejected,
    clean_key,
    clean_text,
    parse_rating,
    parse_timestamp,
)
from rec_orchestration.sources.text_lines import UTF8_OR_LATIN1, Line, read_lines, shown

if TYPE_CHECKING:
    import pandas as pd

# u.genre, in flag order.
GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western")

# ml-1m README: users.dat occupation codes.
OCCUPATIONS_1M = ("other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                  "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                  "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                  "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
AGE_GROUPS_1M = (1, 18, 25, 35, 45, 50, 56)  # the code is the group's lower bound ("1" means under 18)

_YEAR = re.compile(r"\((\d{4})\)\s*$")


def _fields(line: Line, separator: str, expected: int) -> list[str]:
    parts = line.text.split(separator)
    if len(parts) != expected:
        raise InvalidRecord(f"expected {expected} fields separated by {separator!r}, got {len(parts)}")
    return parts


def _csv_fields(line: Line, expected: int) -> list[str]:
    parts = next(csv.reader([line.text])) if '"' in line.text else line.text.split(",")
    if len(parts) != expected:
        raise InvalidRecord(f"expected {expected} comma-separated fields, got {len(parts)}")
    return parts


def _rating_row(user: str, item: str, rating: str, ts: str, now: datetime) -> tuple:
    return (clean_key(user, "user id"), clean_key(item, "movie id"), None, parse_rating(rating, LOWEST_RATING),
            "rating", parse_timestamp(ts, now), None, None, None, None)


def _movie_row(item: str, title: str, genres: list[str], details: dict[str, str]) -> tuple:
    year = _YEAR.search(title)
    if year:
        details = {**details, "year": year.group(1)}
    return (clean_key(item, "movie id"), clean_text(title, "title"), None, genres[0] if genres else None,
            genres, None, None, None, None, Jsonb(details) if details else None)


def _release_date(text: str) -> dict[str, str]:
    try:
        return {"release_date": datetime.strptime(text, "%d-%b-%Y").date().isoformat()}
    except ValueError:
        return {}


def _read(path: Path, encoding: str, parse: Callable[[Line], tuple], header: tuple[str, ...] | None = None
          ) -> Iterator[tuple | Rejected]:
    """Shared loop: each line through ``parse``; the first line checked against ``header`` when given."""
    for line in read_lines(path, encoding):
        if isinstance(line, Rejected):
            yield line
            continue
        if header is not None:
            columns = tuple(c.strip() for c in line.text.split(","))
            if columns != header:
                raise InvalidFileError(
                    f"{path.name}: expected the header {','.join(header)!r}, got {line.text[:200]!r}")
            header = None
            continue
        try:
            yield (line.number, line.crc, *parse(line))
        except InvalidRecord as exc:
            yield Rejected(line.number, shown(line.text), str(exc))


# -- 100K ---------------------------------------------------------------------------------------------

def read_100k_ratings(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    return _read(path, "utf-8", lambda line: _rating_row(*_fields(line, "\t", 4), now))


def _100k_movie(line: Line) -> tuple:
    parts = _fields(line, "|", 24)
    flags = parts[5:]
    if any(flag not in ("0", "1") for flag in flags):
        raise InvalidRecord("genre flags must be 0 or 1")
    genres = [name for name, flag in zip(GENRES_100K, flags, strict=True) if flag == "1"]
    details = _release_date(parts[2])
    if parts[4]:
        details["imdb_url"] = parts[4]
    return _movie_row(parts[0], parts[1], genres, details)


def read_100k_movies(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    return _read(path, "latin-1", _100k_movie)


def _age(text: str) -> int | None:
    if not text.strip():
        return None
    if not text.strip().isdigit() or not AGES[0] <= int(text) <= AGES[1]:
        raise InvalidRecord(f"age {text!r} is not a number from {AGES[0]} to {AGES[1]}")
    return int(text)


def _100k_user(line: Line) -> tuple:
    user, age, gender, occupation, postal = _fields(line, "|", 5)
    return (clean_key(user, "user id"), _age(age), clean_text(gender, "gender"), clean_text(occupation, "occupation"),
            clean_text(postal, "zip code"))


def read_100k_users(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    return _read(path, "latin-1", _100k_user)


# -- 1M / 10M -------------------------------------------------------------------------------------------

def read_dat_ratings(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    return _read(path, "utf-8", lambda line: _rating_row(*_fields(line, "::", 4), now))


def _dat_movie(line: Line) -> tuple:
    item, title, genres = _fields(line, "::", 3)
    return _movie_row(item, title, [g for g in genres.split("|") if g and g != "(no genres listed)"], {})


def read_dat_movies(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    return _read(path, UTF8_OR_LATIN1, _dat_movie)


def _dat_user(line: Line) -> tuple:
    user, gender, age, occupation, postal = _fields(line, "::", 5)
    if not age.isdigit() or int(age) not in AGE_GROUPS_1M:
        raise InvalidRecord(f"age group {age!r} is not one of {AGE_GROUPS_1M}")
    if not occupation.isdigit() or int(occupation) >= len(OCCUPATIONS_1M):
        raise InvalidRecord(f"occupation code {occupation!r} is not 0-{len(OCCUPATIONS_1M) - 1}")
    return (clean_key(user, "user id"), int(age), clean_text(gender, "gender"), OCCUPATIONS_1M[int(occupation)],
            clean_text(postal, "zip code"))


def read_dat_users(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    return _read(path, UTF8_OR_LATIN1, _dat_user)


# -- latest (CSV) ---------------------------------------------------------------------------------------

RATINGS_CSV_HEADER = ("userId", "movieId", "rating", "timestamp")
MOVIES_CSV_HEADER = ("movieId", "title", "genres")


def read_csv_ratings(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    return _read(path, "utf-8", lambda line: _rating_row(*_csv_fields(line, 4), now), RATINGS_CSV_HEADER)


def _csv_movie(line: Line) -> tuple:
    item, title, genres = _csv_fields(line, 3)
    return _movie_row(item, title, [g for g in genres.split("|") if g and g != "(no genres listed)"], {})


def read_csv_movies(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    return _read(path, "utf-8", _csv_movie, MOVIES_CSV_HEADER)


# -- ratings as a DataFrame (benchmarks, offline evaluation) -------------------------------------------

RATINGS_FILES = ("ratings.dat", "u.data", "ratings.csv")  # what a release's directory holds: 1M/10M, 100K, latest


def read_ratings_frame(path: str | Path) -> pd.DataFrame:
    """A MovieLens ratings file, or the release directory holding one, as a DataFrame in file order.

    Columns ``user_id``, ``product_id`` (int64), ``rating`` (float64, stars) and ``ts`` (int64, epoch
    seconds), named as in :mod:`rec_orchestration.ml.interactions`. The layout: a ``.csv`` file is the
    "latest" ``ratings.csv`` (its header checked); otherwise ``::``-separated (``ratings.dat``) when the
    first line holds ``::``, else tab-separated (``u.data``, ``ua.base``, ...). A directory is read through
    the first of :data:`RATINGS_FILES` it holds. Rows stay in file order: the published split protocols
    draw one random number per row in that order. Unlike the loader's readers above, nothing is
    validated row by row: a malformed line fails the whole read.
    """
    import pandas as pd  # here, not at the top: the loader imports this module and needs no pandas

    from rec_orchestration.ml.interactions import ITEM_ID, TIMESTAMP, USER_ID

    path = Path(path)
    if path.is_dir():
        found = [path / name for name in RATINGS_FILES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"no MovieLens ratings file ({', '.join(RATINGS_FILES)}) in {path}")
        path = found[0]
    columns = [USER_ID, ITEM_ID, "rating", TIMESTAMP]
    options = {"names": columns, "index_col": False,
               "dtype": {USER_ID: "int64", ITEM_ID: "int64", "rating": "float64", TIMESTAMP: "int64"}}
    if path.suffix == ".csv":
        with path.open(encoding="utf-8") as fh:
            header = fh.readline().rstrip("\r\n")
        if tuple(c.strip() for c in header.split(",")) != RATINGS_CSV_HEADER:
            raise InvalidFileError(
                f"{path.name}: expected the header {','.join(RATINGS_CSV_HEADER)!r}, got {header[:200]!r}")
        return pd.read_csv(path, header=0, **options)
    raw = path.read_bytes()
    end = raw.find(b"\n")
    if b"::" in (raw if end < 0 else raw[:end]):
        raw = raw.replace(b"::", b"\t")  # the C parser takes one-character separators only
    return pd.read_csv(io.BytesIO(raw), sep="\t", header=None, **options)
