"""Great Expectations suites for the raw landing tables, defined in code.

One function per table returns a fresh list of GX expectation objects; run them with
:func:`rec_orchestration.quality.validation.validate_table`. The checks are row-level
(nulls, ranges, allowed values, duplicate keys within one delivery: a delivery is one file, so one
namespace, and keys are only unique per namespace), so an empty table passes;
whether a table should have rows at all is for the caller to decide (``TableValidation.row_count``).
Map expectations ignore NULLs unless they are about NULLs, so optional columns may stay empty.

``now`` bounds event timestamps from above (``now`` + 1 day, to allow for clock skew); a naive
``now`` is taken as UTC. ``great_expectations`` is imported when a suite is built, not on import.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from rec_orchestration.sources.records import (
    AGES,
    EARLIEST_PLAUSIBLE,
    EVENT_KINDS,
    FUTURE_TOLERANCE,
    HIGHEST_RATING,
    LOWEST_RATING,
    REVIEW_EVENT_TYPES,
)

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation


def _latest_event_ts(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    return now + FUTURE_TOLERANCE


def _event_ts_plausible(now: dt.datetime) -> Expectation:
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeBetween(
        column="event_ts",
        min_value=EARLIEST_PLAUSIBLE,
        max_value=_latest_event_ts(now),
        description=(f"event timestamps lie between {EARLIEST_PLAUSIBLE:%Y-%m-%d} UTC and "
                     f"{FUTURE_TOLERANCE.days} day(s) from now"),
    )


def _not_null(*columns: str) -> list[Expectation]:
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToNotBeNull(column=column, description=f"{column} is set") for column in columns]


def reviews_suite(now: dt.datetime) -> list[Expectation]:
    """``raw.reviews``: keys and timestamp set, rating on the 0.5-5 star scale, known event type."""
    import great_expectations.expectations as gxe

    return [
        *_not_null("user_key", "item_key", "event_ts"),
        gxe.ExpectColumnValuesToBeBetween(
            column="rating", min_value=float(LOWEST_RATING), max_value=HIGHEST_RATING,
            description=f"ratings are {LOWEST_RATING} to {HIGHEST_RATING} stars"
        ),
        _event_ts_plausible(now),
        gxe.ExpectColumnValuesToBeInSet(
            column="event_type", value_set=list(REVIEW_EVENT_TYPES),
            description="event_type is " + " or ".join(REVIEW_EVENT_TYPES),
        ),
    ]


def products_suite(now: dt.datetime) -> list[Expectation]:
    """``raw.products``: item key set and unique within a delivery, sane price and average rating."""
    import great_expectations.expectations as gxe

    del now  # products carry no event timestamp; the argument keeps every suite's signature alike
    return [
        *_not_null("item_key"),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["file_id", "item_key"], description="product metadata keys unique within a delivery"
        ),
        gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, description="prices are not negative"),
        gxe.ExpectColumnValuesToBeBetween(
            column="average_rating", min_value=0, max_value=HIGHEST_RATING,
            description=f"average ratings are 0 to {HIGHEST_RATING} stars"
        ),
    ]


def users_suite(now: dt.datetime) -> list[Expectation]:
    """``raw.users``: user key set and unique within a delivery, plausible age."""
    import great_expectations.expectations as gxe

    del now
    return [
        *_not_null("user_key"),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["file_id", "user_key"], description="user keys unique within a delivery"
        ),
        gxe.ExpectColumnValuesToBeBetween(column="age", min_value=AGES[0], max_value=AGES[1],
                                          description=f"ages are {AGES[0]} to {AGES[1]}"),
    ]


def events_suite(now: dt.datetime) -> list[Expectation]:
    """``raw.events``: keys, type and timestamp set, known event type, positive quantity, sane price."""
    import great_expectations.expectations as gxe

    return [
        *_not_null("user_key", "item_key", "event_type", "event_ts"),
        gxe.ExpectColumnValuesToBeInSet(
            column="event_type",
            value_set=list(EVENT_KINDS),
            description="event_type is one of " + ", ".join(EVENT_KINDS),
        ),
        _event_ts_plausible(now),
        gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=1, description="quantities are at least 1"),
        gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, description="prices are not negative"),
    ]


SuiteBuilder = Callable[[dt.datetime], "list[Expectation]"]

#: ``"schema.table"`` -> (suite name, builder).
RAW_SUITES: dict[str, tuple[str, SuiteBuilder]] = {
    "raw.reviews": ("raw_reviews_suite", reviews_suite),
    "raw.products": ("raw_products_suite", products_suite),
    "raw.users": ("raw_users_suite", users_suite),
    "raw.events": ("raw_events_suite", events_suite),
}
