"""Amazon Reviews 2023 (McAuley lab) JSON lines: reviews files and ``meta_*`` product files.

Reviews: ``rating, title, text, images, asin, parent_asin, user_id, timestamp (ms), helpful_vote,
verified_purchase``. Products: ``main_category, title, average_rating, rating_number, features,
description, price, images, videos, store, categories, details, parent_asin, bought_together``.
Products are keyed by ``parent_asin`` (reviews of every variant count for the parent).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from rec_orchestration.sources.records import (
    InvalidRecord,
    Rejected,
    clean_text,
    parse_epoch,
    parse_optional_decimal,
    parse_rating,
)
from rec_orchestration.sources.text_lines import read_json_lines

FORMAT = "amazon2023"


def is_products_file(path: Path) -> bool:
    return path.name.startswith("meta")


def review_row(record: dict[str, Any], now: datetime) -> tuple:
    item = record.get("parent_asin") or record.get("asin")
    votes = record.get("helpful_vote")
    verified = record.get("verified_purchase")
    return (
        clean_text(record.get("user_id"), "user_id", required=True, max_len=200),
        clean_text(item, "parent_asin", required=True, max_len=200),
        clean_text(record.get("asin"), "asin", max_len=200),
        parse_rating(record.get("rating")),
        "review",
        parse_epoch(record.get("timestamp"), now),
        clean_text(record.get("title"), "title", max_len=2000),
        clean_text(record.get("text"), "text"),
        int(votes) if isinstance(votes, int) and not isinstance(votes, bool) and votes >= 0 else None,
        verified if isinstance(verified, bool) else None,
    )


def product_row(record: dict[str, Any]) -> tuple:
    description = record.get("description")
    if isinstance(description, list):
        description = "\n".join(str(part) for part in description if part)
    categories = record.get("categories")
    if not isinstance(categories, list):
        categories = []
    details = record.get("details")
    return (
        clean_text(record.get("parent_asin"), "parent_asin", required=True, max_len=200),
        clean_text(record.get("title"), "title", max_len=2000),
        clean_text(description, "description"),
        clean_text(record.get("main_category"), "main_category", max_len=500),
        [str(c).replace("\x00", "") for c in categories if c is not None],
        clean_text(record.get("store"), "store", max_len=500),
        parse_optional_decimal(record.get("price"), "price", low=0, high=1e9),
        parse_optional_decimal(record.get("average_rating"), "average_rating", low=0, high=5),
        record.get("rating_number") if isinstance(record.get("rating_number"), int) else None,
        Jsonb(details) if isinstance(details, dict) else None,
    )


def read_reviews(path: Path, now: datetime | None = None) -> Iterator[tuple | Rejected]:
    """Canonical review rows, or :class:`Rejected` for records that cannot be loaded."""
    now = now or datetime.now(UTC)
    for line_number, raw, record in read_json_lines(path):
        if isinstance(record, Rejected):
            yield record
            continue
        try:
            yield (line_number, *review_row(record, now))
        except InvalidRecord as exc:
            yield Rejected(line_number, raw, str(exc))


def read_products(path: Path) -> Iterator[tuple | Rejected]:
    for line_number, raw, record in read_json_lines(path):
        if isinstance(record, Rejected):
            yield record
            continue
        try:
            yield (line_number, *product_row(record))
        except InvalidRecord as exc:
            yield Rejected(line_number, raw, str(exc))

