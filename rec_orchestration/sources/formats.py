"""Which reader a landing file or folder needs: a registry of formats and their detection.

A landing *entry* is a file or a folder directly inside the landing directory; it is one partition
of the raw assets. A file is read by one format; a folder (a MovieLens download, say) by one format
per data file it holds. Detection goes by file name first (MovieLens' fixed names, ``meta_*``, the
extension) and then by content (the CSV header, the keys of the first JSON objects). A file nothing
recognises is an error that names it; inside a folder, files that are not data (README, u.info, the
ua/ub split files that repeat u.data) are listed as ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from rec_orchestration.confinement import OutsideError, within
from rec_orchestration.sources import amazon2014, amazon2023, events, movielens
from rec_orchestration.sources.records import RECORD_KINDS, RecordKind, Rejected
from rec_orchestration.sources.text_lines import open_binary

Reader = Callable[[Path, datetime], Iterator[tuple | Rejected]]


class UnknownFormatError(ValueError):
    """No reader recognises a landing file or folder."""


@dataclass(frozen=True)
class Format:
    name: str
    kind: str  # a key of RECORD_KINDS
    read: Reader
    description: str
    # The source family, and the default namespace of its users and products (sources/namespaces.py):
    # the files of one family share keys (daily drops of one source), different families do not.
    family: str

    @property
    def record_kind(self) -> RecordKind:
        return RECORD_KINDS[self.kind]


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("amazon2023_reviews", "reviews", amazon2023.read_reviews, "Amazon Reviews 2023 reviews (*.jsonl[.gz])",
               "amazon2023"),
        Format("amazon2023_products", "products", amazon2023.read_products, "Amazon Reviews 2023 meta_*.jsonl[.gz]",
               "amazon2023"),
        Format("amazon2014_reviews", "reviews", amazon2014.read_reviews,
               "Amazon reviews 2014 (reviewerID/asin/overall)", "amazon2014"),
        Format("movielens_100k_ratings", "reviews", movielens.read_100k_ratings, "MovieLens 100K u.data",
               "movielens_100k"),
        Format("movielens_100k_movies", "products", movielens.read_100k_movies, "MovieLens 100K u.item",
               "movielens_100k"),
        Format("movielens_100k_users", "users", movielens.read_100k_users, "MovieLens 100K u.user",
               "movielens_100k"),
        Format("movielens_dat_ratings", "reviews", movielens.read_dat_ratings, "MovieLens 1M/10M ratings.dat",
               "movielens_dat"),
        Format("movielens_dat_movies", "products", movielens.read_dat_movies, "MovieLens 1M/10M movies.dat",
               "movielens_dat"),
        Format("movielens_dat_users", "users", movielens.read_dat_users, "MovieLens 1M users.dat", "movielens_dat"),
        Format("movielens_csv_ratings", "reviews", movielens.read_csv_ratings, "MovieLens latest ratings.csv",
               "movielens_csv"),
        Format("movielens_csv_movies", "products", movielens.read_csv_movies, "MovieLens latest movies.csv",
               "movielens_csv"),
        Format("events_csv", "events", events.read_csv, "generic events CSV", "events"),
        Format("events_parquet", "events", events.read_parquet, "generic events Parquet", "events"),
    )
}

BY_NAME = {
    "u.data": "movielens_100k_ratings", "u.item": "movielens_100k_movies", "u.user": "movielens_100k_users",
    "ratings.dat": "movielens_dat_ratings", "movies.dat": "movielens_dat_movies", "users.dat": "movielens_dat_users",
}
_SNIFF_LINES = 20


@dataclass(frozen=True)
class SourceFile:
    path: Path
    format: Format


@dataclass(frozen=True)
class LandingPlan:
    """What one landing entry holds: the files to load (with their formats), the files ignored (not data),
    and the files refused (symlinks resolving outside the entry: ``(path, reason)``)."""

    entry: Path
    files: list[SourceFile]
    ignored: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)


def _base_name(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def _first_lines(path: Path, limit: int = _SNIFF_LINES) -> list[bytes]:
    lines = []
    with open_binary(path) as fh:
        for raw in fh:
            if raw.strip():
                lines.append(raw.strip()[:65_536])
            if len(lines) >= limit:
                break
    return lines


def _sniff_json(path: Path) -> str | None:
    for raw in _first_lines(path):
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        keys = set(record)
        if keys >= amazon2014.SIGNATURE:
            return "amazon2014_reviews"
        if "user_id" in keys and ("parent_asin" in keys or "asin" in keys):
            return "amazon2023_reviews"
        if "parent_asin" in keys:
            return "amazon2023_products"
        return None
    return None  # nothing in the first lines is a JSON object: not a format we know


def _sniff_csv(path: Path) -> str | None:
    lines = _first_lines(path, 1)
    if not lines:
        return "events_csv"  # empty: nothing to load, whatever it was meant to be
    header = tuple(c.strip().strip('"') for c in lines[0].decode("utf-8-sig", errors="replace").split(","))
    if header == movielens.RATINGS_CSV_HEADER:
        return "movielens_csv_ratings"
    if header == movielens.MOVIES_CSV_HEADER:
        return "movielens_csv_movies"
    if {"user_id", "item_id", "event_type"} <= {c.lower() for c in header}:
        return "events_csv"
    return None


def detect(path: Path) -> Format | None:
    """The format of one file, or None when nothing recognises it."""
    base = _base_name(path)
    if base in BY_NAME:
        return FORMATS[BY_NAME[base]]
    name: str | None = None
    if base.endswith((".jsonl", ".json")):
        empty = path.stat().st_size == 0
        if empty:
            name = "amazon2023_products" if base.startswith("meta") else "amazon2023_reviews"
        else:
            name = _sniff_json(path)
    elif base.endswith(".csv"):
        name = _sniff_csv(path)
    elif base.endswith(".parquet"):
        name = "events_parquet"
    return FORMATS[name] if name else None


def is_pending(path: Path) -> bool:
    """Hidden files and partial downloads are not landed yet."""
    return path.name.startswith((".", "_")) or path.name.endswith((".tmp", ".part", ".crdownload"))


def landing_entries(landing_dir: Path) -> list[Path]:
    """Files and folders directly in the landing directory, by name."""
    return sorted(p for p in landing_dir.iterdir() if not is_pending(p) and (p.is_file() or p.is_dir()))


def plan(entry: Path, format_name: str | None = None) -> LandingPlan:
    """The files of a landing entry and their formats; ``format_name`` overrides detection for a file."""
    if format_name is not None and format_name not in FORMATS:
        raise UnknownFormatError(f"unknown format {format_name!r}; known: {', '.join(sorted(FORMATS))}")
    if entry.is_file():
        fmt = FORMATS[format_name] if format_name else detect(entry)
        if fmt is None:
            raise UnknownFormatError(
                f"{entry}: unknown landing file format (known: {', '.join(sorted(FORMATS))}; "
                "name one in the run config's `format`)")
        return LandingPlan(entry, [SourceFile(entry, fmt)])
    if not entry.is_dir():
        raise FileNotFoundError(f"{entry}: no such landing file or folder")
    files, ignored, refused = [], [], []
    for path in sorted(p for p in entry.rglob("*") if p.is_file() and not is_pending(p)):
        try:
            within(entry, path, "landing file")
        except OutsideError as exc:
            refused.append((path, str(exc)))
            continue
        fmt = detect(path)
        (files.append(SourceFile(path, fmt)) if fmt else ignored.append(path))
    if not files and not refused:
        raise UnknownFormatError(f"{entry}: no file in this folder has a known format "
                                 f"(found: {', '.join(p.name for p in ignored) or 'nothing'})")
    return LandingPlan(entry, files, ignored, refused)
