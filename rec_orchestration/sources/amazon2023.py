"""Amazon Reviews 2023 (McAuley lab) JSON lines: reviews files and ``meta_*`` product files.

Reviews: ``rating, title, text, images, asin, parent_asin, user_id, timestamp (ms), helpful_vote,
verified_purchase``. Products: ``main_category, title, average_rating, rating_number, features,
description, price, images, videos, store, categories, details, parent_asin, bought_together``.
Products are keyed by ``parent_asin`` (reviews of every variant count for the parent).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from rec_orchestration.sources.records import (
    Rejected,
    clean_key,
    clean_text,
    parse_optional_decimal,
    parse_rating,
    parse_timestamp,
)
from rec_orchestration.sources.text_lines import read_json_rows


def without_nul(value: Any) -> Any:
    """JSON with every NUL character removed (PostgreSQL jsonb cannot hold \\u0000)."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def optional_count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31 else None


def review_row(record: dict[str, Any], now: datetime) -> tuple:
    item = record.get("parent_asin") or record.get("asin")
    verified = record.get("verified_purchase")
    return (
        clean_key(record.get("user_id"), "user_id"),
        clean_key(item, "parent_asin"),
        clean_text(record.get("asin"), "asin", max_len=200),
        parse_rating(record.get("rating")),
        "review",
        parse_timestamp(record.get("timestamp"), now),
        clean_text(record.get("title"), "title"),
        clean_text(record.get("text"), "text"),
        optional_count(record.get("helpful_vote")),
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
        clean_key(record.get("parent_asin"), "parent_asin"),
        clean_text(record.get("title"), "title"),
        clean_text(description, "description"),
        clean_text(record.get("main_category"), "main_category"),
        [str(c).replace("\x00", "") for c in categories if c is not None],
        clean_text(record.get("store"), "store"),
        parse_optional_decimal(record.get("price"), "price", low=0, high=1e9),
        parse_optional_decimal(record.get("average_rating"), "average_rating", low=0, high=5),
        optional_count(record.get("rating_number")),
        Jsonb(without_nul(details)) if isinstance(details, dict) else None,
    )


def read_reviews(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    """``(line_number, line_crc, *review columns)``, or :class:`Rejected` for records that cannot be loaded."""
    return read_json_rows(path, lambda record: review_row(record, now))


def read_products(path: Path, now: datetime) -> Iterator[tuple | Rejected]:
    return read_json_rows(path, product_row)
