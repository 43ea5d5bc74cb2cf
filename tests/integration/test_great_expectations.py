"""Great Expectations validation of raw tables against the real PostgreSQL (no mocks of GX or Postgres).

The tables are shaped like ``raw.reviews`` / ``raw.products`` but without NOT NULL constraints, so
that they can hold the defects the suites must find. Every bad row has exactly one defect, so each
failing expectation's count and sample name exactly the rows that were planted for it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import dagster as dg
import great_expectations.expectations as gxe
import psycopg
import pytest

from rec_orchestration.db.address import DatabaseSettings
from rec_orchestration.quality.suites import RAW_SUITES, products_suite, reviews_suite
from rec_orchestration.quality.validation import TableValidation, reset_gx_session, validate_table
from rec_orchestration.resources.great_expectations import GreatExpectationsResource, to_check_metadata

NOW = dt.datetime.now(dt.UTC)

REVIEWS_DDL = """
CREATE TABLE raw.{name} (
    file_id bigint, line_number bigint, user_key text, item_key text, variant_key text,
    rating numeric(2, 1), event_type text, event_ts timestamptz, title text, body text,
    helpful_votes integer, verified_purchase boolean,
    PRIMARY KEY (file_id, line_number)
)"""

GOOD_REVIEWS = [
    (1, 1, "u1", "i1", 5.0, "review", dt.datetime(2015, 3, 1, tzinfo=dt.UTC)),
    (1, 2, "u2", "i1", 0.5, "rating", dt.datetime(1995, 1, 1, tzinfo=dt.UTC)),  # both lower bounds, inclusive
    (1, 3, "u2", "i2", 3.5, "review", NOW),
    (1, 4, "u3", "i3", None, "rating", dt.datetime(2024, 7, 1, tzinfo=dt.UTC)),  # no rating: allowed
]
BAD_REVIEWS = [
    (1, 5, "u4", "i1", 7.0, "review", dt.datetime(2016, 1, 1, tzinfo=dt.UTC)),  # rating out of range
    (1, 6, None, "i2", 4.0, "review", dt.datetime(2016, 1, 2, tzinfo=dt.UTC)),  # no user
    (1, 7, "u5", "i2", 4.0, "review", dt.datetime(1990, 6, 1, tzinfo=dt.UTC)),  # too old
    (1, 8, "u6", "i3", 2.0, "bogus", dt.datetime(2017, 1, 1, tzinfo=dt.UTC)),  # unknown event type
    (2, 1, "u7", "i3", 1.0, "bogus", dt.datetime(2017, 1, 2, tzinfo=dt.UTC)),  # unknown event type
    (2, 2, "u8", "i4", 1.5, "rating", NOW + dt.timedelta(days=3)),  # in the future
]

PRODUCTS_DDL = """
CREATE TABLE raw.products (
    file_id bigint, line_number bigint, item_key text, title text, description text,
    main_category text, categories text[], store text, price numeric(12, 2),
    average_rating numeric(3, 2), rating_number integer, details jsonb,
    PRIMARY KEY (file_id, line_number)
)"""

PRODUCTS = [
    (1, 1, "A", 9.99, 4.5, '{"colour": "red"}', ["toys"]),
    (1, 2, "B", None, None, None, None),
    (1, 3, "A", 0.00, 5.0, None, None),  # second "A" in delivery 1
    (1, 4, "C", 12.00, 0.0, None, None),
    (2, 1, "A", 8.50, 4.0, None, None),  # "A" again, but in another delivery: fine
]


def insert_reviews(conn: psycopg.Connection, table: str, rows: list[tuple]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO raw.{table} (file_id, line_number, user_key, item_key, rating, event_type, event_ts)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


@pytest.fixture(scope="module")
def warehouse(test_databases) -> Iterator[DatabaseSettings]:
    db = test_databases.create("rec_test_gx")
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA raw")
        for name in ("reviews", "reviews_clean", "reviews_empty"):
            conn.execute(REVIEWS_DDL.format(name=name))
        insert_reviews(conn, "reviews", GOOD_REVIEWS + BAD_REVIEWS)
        insert_reviews(conn, "reviews_clean", GOOD_REVIEWS)
        conn.execute(PRODUCTS_DDL)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO raw.products (file_id, line_number, item_key, price, average_rating, details, categories)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                PRODUCTS,
            )
    yield db
    reset_gx_session()  # close GX's pooled connections before the database is dropped


def by_check(validation: TableValidation) -> dict[tuple[str, str | None], object]:
    outcomes = {(o.expectation, o.column): o for o in validation.results}
    assert len(outcomes) == len(validation.results), "expectations are expected to be distinct"
    return outcomes


def keys(sample: list) -> set[tuple[int, int]]:
    return {(row["file_id"], row["line_number"]) for row in sample}


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_bad_reviews_fail_exactly_the_expectations_they_break(warehouse: DatabaseSettings, driver: str):
    validation = validate_table(warehouse.url(driver), "raw", "reviews", reviews_suite(NOW), "raw_reviews_suite")

    assert validation.success is False
    assert validation.table == "raw.reviews"
    assert validation.row_count == len(GOOD_REVIEWS) + len(BAD_REVIEWS)
    outcomes = by_check(validation)
    failed = {(o.expectation, o.column) for o in validation.failed}
    assert failed == {
        ("expect_column_values_to_not_be_null", "user_key"),
        ("expect_column_values_to_be_between", "rating"),
        ("expect_column_values_to_be_between", "event_ts"),
        ("expect_column_values_to_be_in_set", "event_type"),
    }
    assert outcomes["expect_column_values_to_not_be_null", "item_key"].success
    assert outcomes["expect_column_values_to_not_be_null", "event_ts"].success

    user = outcomes["expect_column_values_to_not_be_null", "user_key"]
    assert user.unexpected_count == 1
    assert user.unexpected_percent == pytest.approx(100 / 10)
    assert user.sample == [{"file_id": 1, "line_number": 6, "user_key": None}]

    rating = outcomes["expect_column_values_to_be_between", "rating"]
    assert rating.unexpected_count == 1
    # the NULL rating is not counted: percentages are of the 9 non-null ratings
    assert rating.unexpected_percent == pytest.approx(100 / 9)
    assert rating.sample == [{"file_id": 1, "line_number": 5, "rating": "7.0"}]  # Decimal -> str
    assert rating.kwargs == {"column": "rating", "min_value": 0.5, "max_value": 5.0}
    assert rating.error is None
    assert "WHERE rating IS NOT NULL" in rating.unexpected_query

    event_ts = outcomes["expect_column_values_to_be_between", "event_ts"]
    assert event_ts.unexpected_count == 2
    assert keys(event_ts.sample) == {(1, 7), (2, 2)}
    assert {row["event_ts"][:10] for row in event_ts.sample} == {
        "1990-06-01", (NOW + dt.timedelta(days=3)).date().isoformat()
    }

    event_type = outcomes["expect_column_values_to_be_in_set", "event_type"]
    assert event_type.unexpected_count == 2
    assert keys(event_type.sample) == {(1, 8), (2, 1)}
    assert {row["event_type"] for row in event_type.sample} == {"bogus"}

    json.dumps(validation.to_dict())  # JSON-serialisable throughout


def test_clean_reviews_pass(warehouse: DatabaseSettings):
    validation = validate_table(
        warehouse.url("psycopg2"), "raw", "reviews_clean", reviews_suite(NOW), "raw_reviews_suite"
    )

    assert validation.success is True
    assert validation.row_count == len(GOOD_REVIEWS)
    assert len(validation.results) == len(reviews_suite(NOW)) == 6
    assert validation.failed == []
    for outcome in validation.results:
        assert outcome.success and outcome.unexpected_count == 0 and outcome.sample == []


def test_empty_table_passes(warehouse: DatabaseSettings):
    """Decision: the suites are row-level, so a table without rows has nothing wrong with it and
    passes (GX treats map expectations on no rows as vacuously true and reports no counts);
    ``row_count`` lets a caller that requires rows say so."""
    validation = validate_table(
        warehouse.url("psycopg2"), "raw", "reviews_empty", reviews_suite(NOW), "raw_reviews_suite"
    )

    assert validation.success is True
    assert validation.row_count == 0
    assert len(validation.results) == 6
    assert all(o.success and o.sample == [] and not o.unexpected_count for o in validation.results)


def test_duplicate_product_keys_within_a_delivery_fail(warehouse: DatabaseSettings):
    validation = validate_table(
        warehouse.url("psycopg2"), "raw", "products", products_suite(NOW), "raw_products_suite"
    )

    assert validation.success is False
    assert [(o.expectation, o.column) for o in validation.failed] == [
        ("expect_compound_columns_to_be_unique", "file_id, item_key")
    ]
    unique = validation.failed[0]
    assert unique.unexpected_count == 2  # both rows of the duplicated pair; ("A" in delivery 2 is fine)
    assert keys(unique.sample) == {(1, 1), (1, 3)}
    assert all(row["item_key"] == "A" for row in unique.sample)
    assert unique.unexpected_query is None  # GX renders an unrunnable query for compound columns


def test_aggregate_expectations_report_observed_values(warehouse: DatabaseSettings):
    expectations = [
        gxe.ExpectColumnMaxToBeBetween(column="rating", min_value=0.5, max_value=5),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="user_key", min_value=1, max_value=100),
    ]
    validation = validate_table(warehouse.url("psycopg2"), "raw", "reviews", expectations, "aggregates")

    outcomes = by_check(validation)
    maximum = outcomes["expect_column_max_to_be_between", "rating"]
    assert maximum.success is False
    assert float(maximum.observed_value) == 7.0
    distinct_users = outcomes["expect_column_unique_value_count_to_be_between", "user_key"]
    assert distinct_users.success is True
    assert distinct_users.observed_value == len({r[2] for r in GOOD_REVIEWS + BAD_REVIEWS if r[2]})


def test_check_metadata_summarises_the_failures(warehouse: DatabaseSettings):
    validation = validate_table(warehouse.url("psycopg2"), "raw", "reviews", reviews_suite(NOW), "raw_reviews_suite")
    metadata = to_check_metadata(validation)

    assert metadata["expectations_total"].value == 6
    assert metadata["expectations_failed"].value == 4
    assert metadata["row_count"].value == 10
    table = metadata["summary"].value.splitlines()
    assert len(table) == 2 + 6
    rating_row = next(line for line in table if "| rating |" in line)
    assert "❌" in rating_row and "line_number=5" in rating_row and "rating=7.0" in rating_row
    assert json.loads(json.dumps(metadata["results"].data)) == validation.to_dict()


def test_resource_in_a_dagster_asset_check(warehouse: DatabaseSettings):
    url = warehouse.url("psycopg2")

    @dg.asset(key=["raw", "reviews"])
    def reviews() -> None:
        """Stands for the ingestion asset; the table is already there."""

    @dg.asset_check(asset=reviews, blocking=False)
    def reviews_quality(great_expectations: GreatExpectationsResource) -> dg.AssetCheckResult:
        name, build = RAW_SUITES["raw.reviews"]
        validation = great_expectations.validate(url, "raw", "reviews", build(NOW), name)
        return dg.AssetCheckResult(passed=validation.success, metadata=to_check_metadata(validation))

    result = dg.materialize(
        [reviews, reviews_quality],
        resources={"great_expectations": GreatExpectationsResource(sample_size=1)},
    )

    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed is False
    assert evaluation.metadata["expectations_failed"].value == 4
    # sample_size=1: one offending row per failed expectation, though two rows break event_type
    results = evaluation.metadata["results"].data["results"]
    event_type = next(r for r in results if r["column"] == "event_type")
    assert event_type["unexpected_count"] == 2 and len(event_type["sample"]) == 1
