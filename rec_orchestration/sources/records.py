"""The canonical records every reader produces, in the column order of the ``raw`` tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

# Reviews and interactions: one canonical stream whatever the source format.
REVIEW_COLUMNS = ("user_key", "item_key", "variant_key", "rating", "event_type", "event_ts", "title",
                  "body", "helpful_votes", "verified_purchase")
REVIEW_TYPES = ("text", "text", "text", "numeric", "text", "timestamptz", "text", "text", "int4", "bool")

PRODUCT_COLUMNS = ("item_key", "title", "description", "main_category", "categories", "store", "price",
                   "average_rating", "rating_number", "details")
PRODUCT_TYPES = ("text", "text", "text", "text", "text[]", "text", "numeric", "numeric", "int4", "jsonb")

# Reviews dated before the web shop era or in the future are data errors, not history.
EARLIEST_PLAUSIBLE = datetime(1995, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)


class Rejected(NamedTuple):
    """A record that was not loaded: its 1-based line number, its text and why."""

    line_number: int
    raw_text: str
    reason: str


class InvalidRecord(ValueError):
    """Raised by field parsers; the message becomes the rejection reason."""


@dataclass(frozen=True)
class ReadStats:
    rows_read: int
    rows_loaded: int
    rows_rejected: int


def clean_text(value: object, field: str, *, required: bool = False, max_len: int = 1_000_000) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidRecord(f"missing {field}")
        return None
    if not isinstance(value, (str, int)):
        raise InvalidRecord(f"{field} must be a string, got {type(value).__name__}")
    text = str(value).replace("\x00", "")  # PostgreSQL text cannot hold NUL
    return text[:max_len]


def parse_rating(value: object) -> Decimal:
    """A 1-5 star rating; half stars allowed. Strings like "five", NaN and 0 are rejected."""
    if isinstance(value, bool) or value is None:
        raise InvalidRecord(f"rating is not a number: {value!r}")
    try:
        rating = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise InvalidRecord(f"rating is not a number: {value!r}") from exc
    if not rating.is_finite():
        raise InvalidRecord(f"rating is not a number: {value!r}")
    if rating < 1 or rating > 5:
        raise InvalidRecord(f"rating {value!r} outside 1-5")
    if (rating * 2) % 1 != 0:
        raise InvalidRecord(f"rating {value!r} is not a whole or half star")
    return rating


def parse_epoch(value: object, now: datetime) -> datetime:
    """Epoch seconds or milliseconds (told apart by magnitude) to an aware UTC datetime, range-checked."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidRecord(f"timestamp is not a number: {value!r}")
    try:
        number = float(value)
    except ValueError as exc:
        raise InvalidRecord(f"timestamp is not a number: {value!r}") from exc
    if number != number:  # NaN
        raise InvalidRecord(f"timestamp is not a number: {value!r}")
    seconds = number / 1000.0 if abs(number) >= 1e11 else number
    try:
        ts = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidRecord(f"timestamp out of range: {value!r}") from exc
    return check_plausible(ts, now, value)


def check_plausible(ts: datetime, now: datetime, original: object) -> datetime:
    if ts < EARLIEST_PLAUSIBLE:
        raise InvalidRecord(f"timestamp {original!r} is before 1995")
    if ts > now + FUTURE_TOLERANCE:
        raise InvalidRecord(f"timestamp {original!r} is in the future")
    return ts


def parse_optional_decimal(value: object, field: str, *, low: float | None = None,
                           high: float | None = None) -> Decimal | None:
    """Numbers that may be missing or written as text ("$12.99", "None"); bad values become NULL."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().lstrip("$").replace(",", "")
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if not number.is_finite() or (low is not None and number < low) or (high is not None and number > high):
        return None
    return number.quantize(Decimal("0.01"))
