"""The columnar read (``Queries.read_columns``, COPY to CSV parsed by pandas) gives exactly what a plain fetch
gives, value for value, on a real PostgreSQL: the interactions every model trains on and the similarity rows
scoring names reasons from are read through it."""

import math

import pandas as pd
import psycopg
import pytest

from rec_orchestration.db import reads
from rec_orchestration.resources.postgres import PostgresResource

AWKWARD_TEXT = ["plain", "with, comma", 'with "quotes"', "two\nlines", "", None, "NULL", "ünïcode"]


@pytest.fixture()
def warehouse(warehouse_env):
    resource = PostgresResource()
    yield resource
    resource.close()


def test_numbers_and_text_come_back_exactly_as_a_plain_fetch_reads_them(warehouse_env, warehouse):
    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.awkward (id bigint, x double precision, label text)")
        floats = [0.1, 1 / 3, 1e-300, -2.5e300, 123456789.123456789, 2.0 ** 53 + 1, 5e-324, -0.0]
        conn.cursor().executemany("INSERT INTO public.awkward VALUES (%s, %s, %s)",
                                  [(2 ** 62 + i, floats[i], AWKWARD_TEXT[i]) for i in range(len(floats))])
    query = psycopg.sql.SQL("SELECT id, x, label FROM public.awkward ORDER BY id")
    got = warehouse.read_columns(query, {"id": "int64", "x": "float64", "label": "object"})
    fetched = warehouse.read_dataframe(query)
    assert got["id"].tolist() == fetched["id"].tolist()
    assert [x.hex() for x in got["x"]] == [float(x).hex() for x in fetched["x"]]  # bit for bit, -0.0 too
    labels = [None if isinstance(v, float) and math.isnan(v) else v for v in got["label"]]
    assert labels == AWKWARD_TEXT  # an empty text is not NULL, and the text 'NULL' is text


def test_interactions_are_the_rows_a_plain_fetch_gives(module_warehouse_env, warehouse_env, warehouse):
    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA core")
        conn.execute("CREATE TABLE core.interactions (user_id bigint, product_id bigint, weight double precision, "
                     "last_at timestamptz)")
        # Stored in no particular order, with times shared by several of a user's products (ties the order
        # breaks by product) and later products not always later in time.
        conn.execute("""INSERT INTO core.interactions
                        SELECT u, p, (u * p % 7) / 3.0, timestamptz '2024-02-29 23:59:59.999999+00' - u * interval
                               '1 second 7 microseconds' + (p * 7 % 4) * interval '1 day'
                        FROM generate_series(1, 300) u, generate_series(1, 40) p WHERE (u + p) % 5 = 0
                        ORDER BY md5(u::text || '/' || p::text)""")
    frame = reads.interactions_frame(warehouse)
    fetched = warehouse.read_dataframe("""SELECT user_id, product_id, weight, last_at AS ts FROM core.interactions
                                          ORDER BY user_id, last_at, product_id""")
    fetched["ts"] = pd.to_datetime(fetched["ts"], utc=True)
    assert len(frame) == 2400
    pd.testing.assert_frame_equal(frame, fetched, check_exact=True)


def test_the_interactions_version_changes_with_any_row_and_names_the_frame_read_with_it(
        module_warehouse_env, warehouse_env, warehouse):
    """Publish knows the interactions only by this version (it no longer reads them); a scoring shard reads the
    rows and the version in one snapshot. Any changed weight, time, added or removed row changes it; the
    same rows, whatever their storage order, give the same version."""
    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA core")
        conn.execute("CREATE TABLE core.interactions (user_id bigint, product_id bigint, weight double precision, "
                     "last_at timestamptz, PRIMARY KEY (user_id, product_id))")
        conn.execute("""INSERT INTO core.interactions
                        SELECT u, p, u * p % 7 / 3.0, timestamptz '2026-01-01 00:00:00+00' + u * interval '1 hour'
                        FROM generate_series(1, 50) u, generate_series(1, 20) p ORDER BY md5(u::text || p::text)""")
    frame, version = reads.interactions_snapshot(warehouse)
    pd.testing.assert_frame_equal(frame, reads.interactions_frame(warehouse), check_exact=True)
    assert version == reads.interactions_version(warehouse) and version.startswith("1000:")

    seen = {version}
    for change in ("UPDATE core.interactions SET weight = weight + 1e-9 WHERE user_id = 7 AND product_id = 3",
                   "UPDATE core.interactions SET last_at = last_at + interval '1 microsecond' "
                   "WHERE user_id = 7 AND product_id = 3",
                   "DELETE FROM core.interactions WHERE user_id = 7 AND product_id = 3",
                   "INSERT INTO core.interactions VALUES (51, 1, 1.0, '2026-02-01 00:00:00+00')"):
        with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as conn:
            conn.execute(change)
        changed = reads.interactions_version(warehouse)
        assert changed not in seen, change
        seen.add(changed)

    # Back to the first rows, stored in another order: the first version again.
    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as conn:
        conn.execute("DELETE FROM core.interactions WHERE user_id = 51")
        conn.execute("INSERT INTO core.interactions VALUES (7, 3, 7 * 3 % 7 / 3.0, "
                     "timestamptz '2026-01-01 00:00:00+00' + 7 * interval '1 hour')")
        conn.execute("CLUSTER core.interactions USING interactions_pkey")
    assert reads.interactions_version(warehouse) == version
