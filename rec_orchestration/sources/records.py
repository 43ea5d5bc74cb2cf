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

# User attributes (MovieLens demographics).
USER_COLUMNS = ("user_key", "age", "gender", "occupation", "postal_code")
USER_TYPES = ("text", "int4", "text", "text", "text")

# Implicit and explicit events from the generic events format.
EVENT_COLUMNS = ("user_key", "item_key", "event_type", "value", "event_ts", "quantity", "price")
EVENT_TYPES = ("text", "text", "text", "numeric", "timestamptz", "int4", "numeric")
EVENT_KINDS = ("view", "click", "like", "purchase", "rating")


@dataclass(frozen=True)
class RecordKind:
    """One canonical record stream and the ``raw`` table it lands in."""

    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    # At most one record per key in a file: later ones are quarantined. Per file is per namespace too (a
    # file has one, raw.ingested_files.namespace); across files the warehouse keys by (namespace, key).
    unique_key: tuple[str, ...] = ()

    @property
    def table(self) -> str:
        return f"raw.{self.name}"


RECORD_KINDS = {
    kind.name: kind
    for kind in (
        RecordKind("reviews", REVIEW_COLUMNS, REVIEW_TYPES),
        RecordKind("products", PRODUCT_COLUMNS, PRODUCT_TYPES, ("item_key",)),
        RecordKind("users", USER_COLUMNS, USER_TYPES, ("user_key",)),
        RecordKind("events", EVENT_COLUMNS, EVENT_TYPES),
    )
}

# What a plausible record is: the loader quarantines what breaks these, and the Great Expectations
# suites (quality/suites.py) check the loaded tables against the same bounds.
# Reviews dated before the web shop era or in the future are data errors, not history.
EARLIEST_PLAUSIBLE = datetime(1995, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)  # tolerated clock skew of the sources
MAX_KEY_LENGTH = 200
REVIEW_EVENT_TYPES = ("review", "rating")  # event_type of raw.reviews: Amazon reviews, MovieLens ratings
LOWEST_RATING = Decimal("0.5")  # MovieLens half stars; Amazon's stars start at 1
HIGHEST_RATING = 5
AGES = (1, 120)  # plausible user ages, inclusive


class Rejected(NamedTuple):
    """A record that was not loaded: its 1-based line number, its text and why."""

    line_number: int
    raw_text: str
    reason: str


class InvalidRecord(ValueError):
    """Raised by field parsers; the message becomes the rejection reason."""


class InvalidFileError(ValueError):
    """The file as a whole is not what its format says (a wrong header, say): nothing of it is loaded."""


def clean_text(value: object, field: str, *, required: bool = False, max_len: int | None = None) -> str | None:
    """Text as stored: NUL removed (PostgreSQL text cannot hold it). Over ``max_len`` is an error, never cut."""
    if type(value) is str and value and not value.isspace() and "\x00" not in value:  # the common case, fast
        if max_len is not None and len(value) > max_len:
            raise InvalidRecord(f"{field} is {len(value)} characters, over the limit of {max_len}")
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidRecord(f"missing {field}")
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InvalidRecord(f"{field} must be a string, got {type(value).__name__}")
    text = str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
        if not text.strip():
            if required:
                raise InvalidRecord(f"missing {field}")
            return None
    if max_len is not None and len(text) > max_len:
        raise InvalidRecord(f"{field} is {len(text)} characters, over the limit of {max_len}")
    return text


def clean_key(value: object, field: str) -> str:
    """A user or item identifier: required, stripped, at most 200 characters."""
    if (type(value) is str and 0 < len(value) <= MAX_KEY_LENGTH and not value[0].isspace()
            and not value[-1].isspace() and "\x00" not in value):  # the common case, fast
        return value
    if isinstance(value, str):
        value = value.strip()
    elif isinstance(value, float) and value.is_integer():  # integer ids read through pandas with NULLs
        value = int(value)
    return clean_text(value, field, required=True, max_len=MAX_KEY_LENGTH)  # type: ignore[return-value]


_HALF_STARS = {str(n / 2): Decimal(n) / 2 for n in range(0, 11)} | {str(n): Decimal(n) for n in range(0, 6)}


def parse_rating(value: object, low: Decimal | int = 1) -> Decimal:
    """A star rating from ``low`` (1 for Amazon, 0.5 for MovieLens) to 5, whole or half stars.

    Strings like "five", NaN, 0 and 6 are rejected.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidRecord(f"rating is not a number: {value!r}")
    text = value.strip() if isinstance(value, str) else str(value)
    rating = _HALF_STARS.get(text)  # the common case, without the cost of Decimal parsing
    if rating is None:
        try:
            rating = Decimal(text)
        except InvalidOperation as exc:
            raise InvalidRecord(f"rating is not a number: {value!r}") from exc
        if not rating.is_finite():
            raise InvalidRecord(f"rating is not a number: {value!r}")
    if rating < low or rating > HIGHEST_RATING:
        raise InvalidRecord(f"rating {value!r} outside {low}-{HIGHEST_RATING}")
    if (rating * 2) % 1 != 0:
        raise InvalidRecord(f"rating {value!r} is not a whole or half star")
    return rating


def parse_timestamp(value: object, now: datetime) -> datetime:
    """Epoch seconds or milliseconds (number or digits) or ISO 8601 text (naive means UTC), range-checked."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidRecord("missing timestamp")
        if not (text[0].isdigit() and "-" in text[1:]):  # "1600000000", "1.6e9": numbers, not dates
            return parse_epoch(text, now)
        try:
            ts = datetime.fromisoformat(text)
        except ValueError as exc:
            raise InvalidRecord(f"timestamp is neither epoch nor ISO 8601: {value!r}") from exc
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return check_plausible(ts, now, value)
    if type(value) is int:  # the common case, fast: epoch seconds or milliseconds
        try:
            ts = datetime.fromtimestamp(value / 1000 if abs(value) >= 100_000_000_000 else value, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise InvalidRecord(f"timestamp out of range: {value!r}") from exc
        return check_plausible(ts, now, value)
    if isinstance(value, datetime):
        return check_plausible(value if value.tzinfo else value.replace(tzinfo=UTC), now, value.isoformat())
    if value is None:
        raise InvalidRecord("missing timestamp")
    return parse_epoch(value, now)


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
