"""The dbt warehouse: incremental builds equal a full rebuild, re-deliveries resolve to the latest load,
events become interactions and orders, and categories come from the products.

Real PostgreSQL, real dbt (through the Dagster assets), real landing files."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from rec_orchestration import settings
from tests.support import assert_success, materialize_everything, query, scalar

CORE_TABLES = ("users", "products", "categories", "product_categories", "reviews", "events", "interactions",
               "transactions", "transaction_items")
EVENTS_HEADER = "user_id,item_id,event_type,value,timestamp,quantity,price\n"


def snapshot(db) -> dict[str, list[str]]:
    """Every row of every core table as sorted JSON, without the build stamp."""
    return {table: [row[0] for row in query(db, f"""
                SELECT (to_jsonb(t) - 'refreshed_at')::text AS row_text FROM core.{table} AS t ORDER BY 1""")]
            for table in CORE_TABLES}


def rebuild_warehouse_from_scratch() -> None:
    from rec_orchestration.assets.warehouse import warehouse_dbt_models
    from rec_orchestration.definitions import defs

    result = dg.materialize([warehouse_dbt_models], resources=defs.resources, raise_on_error=False,
                            run_config={"ops": {"warehouse_dbt_models": {"config": {"full_refresh": True}}}})
    assert_success(result)


def keyed_ids(db, dimension: str) -> dict[tuple[str, str], int]:
    """(namespace, key) -> surrogate id of core.users or core.products."""
    key, surrogate = {"users": ("user_key", "user_id"), "products": ("product_key", "product_id")}[dimension]
    return {(ns, k): i for ns, k, i in query(db, f"SELECT namespace, {key}, {surrogate} FROM core.{dimension}")}


def first_lines(path: Path, n: int) -> list[dict]:
    with path.open() as fh:
        return [json.loads(next(fh)) for _ in range(n)]


@pytest.fixture()
def landing(warehouse_env) -> Path:
    return settings.landing_dir()


def test_an_incremental_build_after_one_more_file_equals_a_full_rebuild(warehouse_env, landing):
    first_review, second_review = first_lines(landing / "reviews.jsonl", 2)
    known_product = first_review["parent_asin"]
    # The shop's event files and its reviews name the same users and products: one namespace.
    (landing / "_namespaces.toml").write_text('"events_*.csv" = "amazon2023"\n')
    (landing / "events_day1.csv").write_text(EVENTS_HEADER + "\n".join([
        f"E1,{known_product},view,,1690000000,,",
        f"E1,{known_product},click,,1690000060,,",
        f"E1,{known_product},purchase,,1690000120,2,19.99",
        "E1,NEWITEM1,purchase,,1690000120,1,5.00",  # same user and time: the same order
        f"{first_review['user_id']},{known_product},like,,1690000200,,",
    ]) + "\n")
    assert_success(materialize_everything())
    first_build = scalar(warehouse_env, "SELECT max(refreshed_at) FROM core.reviews")
    reviews_before = scalar(warehouse_env, "SELECT count(*) FROM core.reviews")
    users_before = keyed_ids(warehouse_env, "users")
    products_before = keyed_ids(warehouse_env, "products")

    # One more file: the first review again with another rating (the newer load wins), the second
    # exactly again (collapses), a review by a new user of a new product, and a review by E1.
    changed = {**first_review, "rating": 1.0 if first_review["rating"] != 1.0 else 2.0, "title": "Changed my mind"}
    new_review = {**second_review, "user_id": "NEWUSER1", "parent_asin": "NEWITEM2", "asin": "NEWITEM2",
                  "rating": 4.0, "timestamp": 1690000300000}
    by_e1 = {**second_review, "user_id": "E1", "parent_asin": known_product, "asin": known_product,
             "rating": 4.0, "timestamp": 1690000400000}
    (landing / "reviews_day2.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in (changed, second_review, new_review, by_e1)))
    assert_success(materialize_everything())

    # Only the new file's rows were written; existing users and products kept their ids.
    assert scalar(warehouse_env, "SELECT count(*) FROM core.reviews WHERE refreshed_at > %s",
                  (first_build,)) == 4
    assert scalar(warehouse_env, "SELECT count(*) FROM core.reviews") == reviews_before + 2
    assert users_before.items() <= keyed_ids(warehouse_env, "users").items()
    assert products_before.items() <= keyed_ids(warehouse_env, "products").items()
    rating, title = query(warehouse_env, """
        SELECT r.rating, r.title FROM core.reviews r
        JOIN core.users u USING (user_id) JOIN core.products p USING (product_id)
        WHERE u.user_key = %s AND p.product_key = %s
          AND r.reviewed_at = 'epoch'::timestamptz + %s * interval '1 millisecond'""",
        (first_review["user_id"], first_review["parent_asin"], first_review["timestamp"]))[0]
    assert (rating, title) == (Decimal(str(changed["rating"])), "Changed my mind")

    # E1's view (1) + click (2) + purchase (3) + a 4-star review (4 x 0.6) on one product.
    weight, signals, first_at = query(warehouse_env, """
        SELECT i.weight, i.signal_count, i.first_at FROM core.interactions i
        JOIN core.users u USING (user_id) JOIN core.products p USING (product_id)
        WHERE u.user_key = 'E1' AND p.product_key = %s""", (known_product,))[0]
    assert (weight, signals) == (pytest.approx(8.4), 4)
    assert first_at.timestamp() == 1690000000
    # Its two purchases at one instant are one order.
    assert query(warehouse_env, """
        SELECT t.line_count, t.item_count, t.total_price, t.status FROM core.transactions t
        JOIN core.users u USING (user_id) WHERE u.user_key = 'E1'""") == [(2, 3, Decimal("44.98"), "completed")]
    # Activity and rating figures roll up from the interactions.
    assert query(warehouse_env, """
        SELECT review_count, product_count FROM core.users WHERE user_key = 'E1'""") == [(1, 2)]
    assert scalar(warehouse_env, """
        SELECT count(*) FROM core.users u
        WHERE review_count <> (SELECT count(*) FROM core.reviews r WHERE r.user_id = u.user_id)""") == 0
    assert scalar(warehouse_env, """
        SELECT count(*) FROM core.products p
        WHERE review_count <> (SELECT count(*) FROM core.reviews r WHERE r.product_id = p.product_id)""") == 0

    incremental = snapshot(warehouse_env)
    rebuild_warehouse_from_scratch()
    assert snapshot(warehouse_env) == incremental



def test_core_tables_with_other_columns_are_rebuilt_instead_of_failing_the_build(warehouse_env):
    """A table whose columns differ from its model (an earlier version built it) would stop dbt."""
    assert_success(materialize_everything())
    expected = snapshot(warehouse_env)
    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER TABLE core.reviews DROP COLUMN load_seq")
    result = materialize_everything()
    assert_success(result)
    assert snapshot(warehouse_env) == expected


def test_a_full_refresh_of_part_of_the_warehouse_is_refused(warehouse_env):
    from rec_orchestration.assets.warehouse import warehouse_dbt_models
    from rec_orchestration.definitions import defs

    assert_success(materialize_everything())
    result = dg.materialize([warehouse_dbt_models], selection=[dg.AssetKey(["core", "users"])],
                            resources=defs.resources, raise_on_error=False,
                            run_config={"ops": {"warehouse_dbt_models": {"config": {"full_refresh": True}}}})
    assert not result.success
    assert any("select every dbt asset" in str(e.event_specific_data.error) for e in result.all_events
               if e.event_type_value == "STEP_FAILURE")
    # The foreign keys that point at core.users are all still there.
    assert scalar(warehouse_env, """
        SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confrelid = 'core.users'::regclass""") == 4


def build_warehouse(*selection: str, full_refresh: bool = False) -> dg.ExecuteInProcessResult:
    from rec_orchestration.assets.warehouse import warehouse_dbt_models
    from rec_orchestration.definitions import defs

    keys = [dg.AssetKey(key.split("/")) for key in selection] or None
    return dg.materialize([warehouse_dbt_models], selection=keys, resources=defs.resources, raise_on_error=False,
                          run_config={"ops": {"warehouse_dbt_models": {"config": {"full_refresh": full_refresh}}}})


def test_a_model_left_out_of_a_build_is_caught_up_and_never_overtaken(warehouse_env, landing):
    """Reviews land, then events; a build of everything but core/reviews must not let core.interactions
    move past the reviews it has not seen."""
    from rec_orchestration.sources.formats import FORMATS
    from rec_orchestration.sources.loader import load_file

    assert_success(materialize_everything())
    (first_review,) = first_lines(landing / "reviews.jsonl", 1)
    late = landing.parent / "later"
    late.mkdir()
    late_review = {**first_review, "user_id": "LATE1", "timestamp": 1690000000000}
    (late / "reviews.jsonl").write_text(json.dumps(late_review) + "\n")
    (late / "events.csv").write_text(EVENTS_HEADER + f"LATE2,{first_review['parent_asin']},view,,1690000100,,\n")
    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as conn:
        load_file(conn, late / "reviews.jsonl", FORMATS["amazon2023_reviews"])
        load_file(conn, late / "events.csv", FORMATS["events_csv"])

    assert_success(build_warehouse("staging/load_ceiling", "staging/stg_reviews", "staging/stg_events",
                                   "staging/stg_users", "staging/stg_products", "core/users", "core/products",
                                   "core/events", "core/interactions"))
    pairs = "SELECT u.user_key FROM core.interactions JOIN core.users u USING (user_id) WHERE u.user_key LIKE 'LATE%%'"
    assert query(warehouse_env, pairs) == []  # interactions waits for core.reviews

    assert_success(build_warehouse())
    assert sorted(row[0] for row in query(warehouse_env, pairs)) == ["LATE1", "LATE2"]
    incremental = snapshot(warehouse_env)
    assert_success(build_warehouse(full_refresh=True))
    assert snapshot(warehouse_env) == incremental


def test_rows_that_failed_a_test_are_tested_again_until_they_are_fixed(warehouse_env):
    """Tests on the large tables check only rows written since the last green build, so a bad row
    keeps failing its test on the next builds, not just on the one that wrote it."""
    assert_success(materialize_everything())
    bad_pair = "(SELECT user_id, product_id FROM core.interactions ORDER BY 1, 2 LIMIT 1)"
    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as conn:
        weight = conn.execute(f"SELECT weight FROM core.interactions WHERE (user_id, product_id) = {bad_pair}"
                              ).fetchone()[0]
        # What a faulty build would have written: a weight beyond the tested range, stamped now.
        conn.execute(f"UPDATE core.interactions SET weight = 5e9, refreshed_at = clock_timestamp() "
                     f"WHERE (user_id, product_id) = {bad_pair}")

    def failed_checks(result: dg.ExecuteInProcessResult) -> set[str]:
        return {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}

    for _ in range(2):  # no new file the second time: the row is still untested, so the test fails again
        result = build_warehouse()
        assert not result.success
        assert {name for name in failed_checks(result) if "interactions_weight" in name} != set()
    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as conn:
        conn.execute(f"UPDATE core.interactions SET weight = %s WHERE (user_id, product_id) = {bad_pair}", (weight,))
    assert_success(build_warehouse())
    assert failed_checks(build_warehouse()) == set()


FACT_FOREIGN_KEYS = {(table, column, parent) for table in ("reviews", "events", "interactions")
                     for column, parent in (("user_id", "users"), ("product_id", "products"))}


def fact_foreign_keys(db) -> set[tuple[str, str, str]]:
    """(table, column, referenced table) of the validated foreign keys of core.reviews, events, interactions."""
    return {tuple(row) for row in query(db, """
        SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text
        FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'f' AND c.convalidated
          AND c.conrelid IN ('core.reviews'::regclass, 'core.events'::regclass, 'core.interactions'::regclass)""")}


def test_the_fact_tables_keep_their_foreign_keys_through_full_and_incremental_builds(warehouse_env):
    """The keys are added after a full build has loaded the rows (checked in one pass, not per row): a
    build from scratch, an incremental one and a full refresh all leave each key once, validated, and a
    row naming an unknown user is refused."""
    expected = {(f"core.{table}", column, f"core.{parent}") for table, column, parent in FACT_FOREIGN_KEYS}
    assert_success(materialize_everything())
    assert fact_foreign_keys(warehouse_env) == expected
    assert_success(materialize_everything())  # incremental: nothing new, nothing added twice
    rebuild_warehouse_from_scratch()
    assert fact_foreign_keys(warehouse_env) == expected
    assert scalar(warehouse_env, """SELECT count(*) FROM pg_constraint WHERE contype = 'f'
                                    AND conrelid = 'core.interactions'::regclass""") == 2
    with psycopg.connect(warehouse_env.conninfo()) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("""INSERT INTO core.interactions (user_id, product_id, weight, signal_count, review_count,
                                                      rating_sum, first_at, last_at, load_seq, refreshed_at)
                        SELECT -1, product_id, 1, 1, 0, 0, now(), now(), 0, now() FROM core.products LIMIT 1""")
