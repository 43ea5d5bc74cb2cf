"""Amazon product reviews 2014 (McAuley/UCSD) JSON lines, e.g. ``reviews_Musical_Instruments_5.json.gz``.

Fields: ``reviewerID, asin, reviewerName, helpful [helpful, total], reviewText, overall (1-5),
summary, unixReviewTime (s), reviewTime ("02 28, 2014")``. The reviewer's name is not kept (not
needed, and personal). ``helpful[0]`` becomes ``helpful_votes``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from rec_orchestration.sources.amazon2023 import optional_count
from rec_orchestration.sources.records import (
    Rejected,
    clean_key,
    clean_text,
    parse_rating,
    parse_timestamp,
)
from rec_orchestration.sources.text_lines import read_json_rows

SIGNATURE = frozenset({"reviewerID", "asin", "overall"})


def review_row(record: dict[str, Any], now: datetime) -> tuple:
    helpful = record.get("helpful")
    votes = optional_count(helpful[0]) if isinstance(helpful, list) and helpful else None
    return (
        clean_key(record.get("reviewerID"), "reviewerID"),
        clean_key(record.get("asin"), "asin"),
        None,
        parse_rating(record.get("overall")),
        "review",
        parse_timestamp(record.get("unixReviewTime"), now),
        clean_text(record.get("summary"), "summary"),
        clean_text(record.get("reviewText"), "reviewText"),
        votes,
        None,
    )


def read_reviews(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    return read_json_rows(path, lambda record: review_row(record, now))
