"""Two sources, one user: keys are namespaced by source.

A MovieLens 100K folder and a MovieLens 1M folder both have user "1" and movie "1". By default each
format family is its own namespace, so they stay two users, two movies, and no interaction merges two
people's ratings; a ``_namespaces.toml`` (or run config) putting both in one namespace merges them as
before. Also: surrogate ids stay put when a second source arrives and equal a full rebuild's, a
ledger and core tables from before namespaces are migrated, and a bad namespace is a clear error.

Real PostgreSQL, real dbt and Dagster, real landing folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from rec_orchestration.sources.formats import FORMATS
from rec_orchestration.sources.loader import ensure_raw_schema, load_entry
from rec_orchestration.sources.namespaces import NAMESPACES_FILE
from tests.support import assert_success, materialize_everything, query, scalar

# Each source's ratings as (user, movie, stars). Both have user 1 rating movie 1, with other stars.
RATINGS_100K = [("1", "1", 5), ("1", "2", 3), ("2", "1", 4), ("3", "3", 2)]
RATINGS_1M = [("1", "1", 2), ("1", "4", 4), ("2", "2", 5), ("5", "1", 3)]
CORE_TABLES = ("users", "products", "categories", "product_categories", "reviews", "events", "interactions",
               "transactions", "transaction_items")


def write_ml_100k(folder: Path) -> None:
    folder.mkdir()
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{881250949 + n}\n"
                                           for n, (u, i, r) in enumerate(RATINGS_100K)))
    flags = {"1": (3, 4, 5), "2": (1, 2, 16), "3": (16,)}  # u.genre positions
    titles = {"1": "Toy Story (1995)", "2": "GoldenEye (1995)", "3": "Four Rooms (1995)"}
    (folder / "u.item").write_bytes("".join(
        f"{i}|{titles[i]}|01-Jan-1995||http://us.imdb.com/M/title-exact?{i}|"
        + "|".join("1" if g in flags[i] else "0" for g in range(19)) + "\n" for i in titles).encode("latin-1"))
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")


def write_ml_1m(folder: Path) -> None:
    folder.mkdir()
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{978300760 + n}\n"
                                                for n, (u, i, r) in enumerate(RATINGS_1M)))
    (folder / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n"
                                        "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
                                        "4::Waiting to Exhale (1995)::Comedy|Drama\n".encode("latin-1"))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n5::M::25::20::55455\n")


@pytest.fixture()
def landing(warehouse_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A landing directory of its own (no sample files), holding the 100K folder only."""
    directory = tmp_path / "ml_landing"
    directory.mkdir()
    write_ml_100k(directory / "ml-100k")
    monkeypatch.setenv("REC_LANDING_DIR", str(directory))
    return directory


def build(run_config: dict | None = None, *, warehouse: bool = True) -> dg.ExecuteInProcessResult:
    """The refresh's raw assets (and the dbt assets) over every landing entry."""
    from rec_orchestration.assets.ingestion import RAW_ASSET_KEYS
    from rec_orchestration.assets.warehouse import warehouse_dbt_models

    selection = [*RAW_ASSET_KEYS, *(warehouse_dbt_models.keys if warehouse else [])]
    return materialize_everything(run_config=run_config or {}, asset_selection=selection)


def snapshot(db) -> dict[str, list[str]]:
    """Every row of every core table as sorted JSON, without the build stamp."""
    return {table: [row[0] for row in query(db, f"""
                SELECT (to_jsonb(t) - 'refreshed_at')::text FROM core.{table} AS t ORDER BY 1""")]
            for table in CORE_TABLES}


def user_ids(db) -> dict[tuple[str, str], int]:
    return {(ns, key): uid for ns, key, uid in query(db, "SELECT namespace, user_key, user_id FROM core.users")}


def product_ids(db) -> dict[tuple[str, str], int]:
    rows = query(db, "SELECT namespace, product_key, product_id FROM core.products")
    return {(ns, key): pid for ns, key, pid in rows}


def interactions(db) -> dict[tuple[str, str, str], tuple]:
    """(namespace, user_key, product_key) -> (review_count, rating_sum); a user and a product of one
    interaction are always of one namespace."""
    rows = query(db, """
        SELECT u.namespace, p.namespace, u.user_key, p.product_key, i.review_count, i.rating_sum
        FROM core.interactions i JOIN core.users u USING (user_id) JOIN core.products p USING (product_id)""")
    assert all(user_ns == product_ns for user_ns, product_ns, *_ in rows)
    return {(ns, user, product): (reviews, float(stars)) for ns, _, user, product, reviews, stars in rows}


def test_two_sources_sharing_ids_stay_apart_with_stable_ids_and_old_tables_are_rebuilt(warehouse_env, landing):
    assert_success(build())
    first_users, first_products = user_ids(warehouse_env), product_ids(warehouse_env)
    assert set(first_users) == {("movielens_100k", k) for k in ("1", "2", "3")}

    write_ml_1m(landing / "ml-1m")
    assert_success(build())  # incremental: the 1M folder's files only
    assert query(warehouse_env, "SELECT DISTINCT landing_entry, namespace FROM raw.ingested_files ORDER BY 1") == [
        ("ml-100k", "movielens_100k"), ("ml-1m", "movielens_dat")]

    # Two user 1s, two movie 1s; nobody's ratings merged with anybody else's.
    users = user_ids(warehouse_env)
    assert set(users) == ({("movielens_100k", k) for k in ("1", "2", "3")}
                          | {("movielens_dat", k) for k in ("1", "2", "5")})
    assert set(product_ids(warehouse_env)) == ({("movielens_100k", k) for k in ("1", "2", "3")}
                                               | {("movielens_dat", k) for k in ("1", "2", "4")})
    expected = {("movielens_100k", u, i): (1, float(r)) for u, i, r in RATINGS_100K} | {
        ("movielens_dat", u, i): (1, float(r)) for u, i, r in RATINGS_1M}
    assert interactions(warehouse_env) == expected
    assert scalar(warehouse_env, "SELECT count(*) FROM core.interactions") == len(expected) == 8
    assert scalar(warehouse_env, "SELECT count(*) FROM core.reviews") == 8
    assert query(warehouse_env, """
        SELECT namespace, age, gender, occupation, postal_code, review_count FROM core.users
        WHERE user_key = '1' ORDER BY namespace""") == [
        ("movielens_100k", 24, "M", "technician", "85711", 2), ("movielens_dat", 1, "F", "K-12 student", "48067", 2)]
    assert query(warehouse_env, """
        SELECT namespace, title, rating_count FROM core.products WHERE product_key = '1' ORDER BY namespace""") == [
        ("movielens_100k", "Toy Story (1995)", 2), ("movielens_dat", "Toy Story (1995)", 2)]

    # Ids of the first source did not move; the second's follow them, by file, then namespace and key.
    assert first_users.items() <= users.items() and first_products.items() <= product_ids(warehouse_env).items()
    assert min(users[("movielens_dat", k)] for k in ("1", "2", "5")) > max(first_users.values())
    incremental = snapshot(warehouse_env)
    built = scalar(warehouse_env, "SELECT max(refreshed_at) FROM core.reviews")

    # Core tables from before namespaces (no namespace column) are rebuilt from raw by the next build,
    # automatically, to exactly what the incremental builds made: the same ids included.
    with psycopg.connect(warehouse_env.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER TABLE core.users DROP COLUMN namespace")
        conn.execute("ALTER TABLE core.products DROP COLUMN namespace")
    assert_success(build())
    assert scalar(warehouse_env, "SELECT min(refreshed_at) FROM core.reviews") > built  # every row rewritten
    assert snapshot(warehouse_env) == incremental


def test_a_mapping_file_puts_two_sources_in_one_namespace(warehouse_env, landing):
    write_ml_1m(landing / "ml-1m")
    (landing / NAMESPACES_FILE).write_text('# both MovieLens downloads are one site\n"ml-*" = "movielens"\n')
    assert_success(build())

    assert query(warehouse_env, "SELECT DISTINCT namespace FROM raw.ingested_files") == [("movielens",)]
    assert set(user_ids(warehouse_env)) == {("movielens", k) for k in ("1", "2", "3", "5")}
    assert set(product_ids(warehouse_env)) == {("movielens", k) for k in ("1", "2", "3", "4")}
    # User 1's two ratings of movie 1 are one interaction again, as before namespaces.
    merged: dict[tuple, tuple] = {}
    for u, i, r in RATINGS_100K + RATINGS_1M:
        reviews, stars = merged.get(("movielens", u, i), (0, 0.0))
        merged[("movielens", u, i)] = (reviews + 1, stars + r)
    assert interactions(warehouse_env) == merged
    assert merged[("movielens", "1", "1")] == (2, 7.0) and len(merged) == 7
    assert scalar(warehouse_env, "SELECT count(*) FROM core.reviews") == 8


def test_run_config_names_the_namespace_over_the_mapping_file(warehouse_env, landing):
    write_ml_1m(landing / "ml-1m")
    (landing / NAMESPACES_FILE).write_text('"ml-1m" = "movielens"\n')
    assert_success(build({"ops": {"raw_landing": {"config": {"namespace": "film_site"}}}}, warehouse=False))
    assert query(warehouse_env, "SELECT DISTINCT namespace FROM raw.ingested_files") == [("film_site",)]


def test_without_run_config_the_mapping_file_applies_to_its_entries_only(warehouse_env, landing):
    write_ml_1m(landing / "ml-1m")
    (landing / NAMESPACES_FILE).write_text('"ml-1m" = "movielens"\n"ml-1?" = "never_reached"\n')
    assert_success(build(warehouse=False))
    assert query(warehouse_env, "SELECT DISTINCT landing_entry, namespace FROM raw.ingested_files ORDER BY 1") == [
        ("ml-100k", "movielens_100k"), ("ml-1m", "movielens")]


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.event_type_value == "STEP_FAILURE")


def test_a_bad_namespace_fails_clearly_and_loads_nothing(warehouse_env, landing):
    (landing / NAMESPACES_FILE).write_text('"ml-100k" = "MovieLens 100K"\n')
    result = build(warehouse=False)
    assert not result.success
    assert (f"{landing / NAMESPACES_FILE}, entry 'ml-100k': namespace 'MovieLens 100K' is not valid"
            in failure_messages(result))

    (landing / NAMESPACES_FILE).unlink()
    result = build({"ops": {"raw_landing": {"config": {"namespace": "ml-100k"}}}}, warehouse=False)
    assert not result.success
    assert "run config namespace: namespace 'ml-100k' is not valid" in failure_messages(result)
    with psycopg.connect(warehouse_env.conninfo()) as conn:
        assert conn.execute("SELECT count(*) FROM raw.ingested_files").fetchone()[0] == 0


def test_a_ledger_from_before_namespaces_gets_the_column_filled_with_each_formats_default(conn):
    conn.execute("ALTER TABLE raw.ingested_files DROP COLUMN namespace")
    for number, name in enumerate(FORMATS):
        conn.execute("""INSERT INTO raw.ingested_files (path, content_sha256, source_format, record_kind, size_bytes,
                                                        started_at)
                        VALUES (%s, %s, %s, %s, 0, now())""",
                     (f"/old/{name}", f"sha{number}", name, FORMATS[name].kind))
    for _ in range(2):  # idempotent: the second run finds the column and changes nothing
        with conn.transaction():
            ensure_raw_schema(conn)
        assert dict(conn.execute("SELECT source_format, namespace FROM raw.ingested_files").fetchall()) == {
            name: fmt.family for name, fmt in FORMATS.items()}
    assert conn.execute("""SELECT is_nullable FROM information_schema.columns
                           WHERE table_schema = 'raw' AND table_name = 'ingested_files'
                             AND column_name = 'namespace'""").fetchone()[0] == "NO"
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("""INSERT INTO raw.ingested_files (path, content_sha256, source_format, record_kind, namespace,
                                                        size_bytes, started_at)
                        VALUES ('/new', 'sha-new', 'events_csv', 'events', 'Bad Namespace', 0, now())""")


def test_the_loader_stamps_each_file_and_content_loaded_before_keeps_its_namespace(conn, tmp_path: Path):
    write_ml_100k(tmp_path / "drop")
    first = load_entry(conn, tmp_path / "drop")
    assert {r.namespace for r in first.loaded} == {"movielens_100k"} and not any(r.already_loaded for r in first.loaded)

    # Unchanged (path, size, mtime) or the same content elsewhere: skipped, with the namespace it has.
    again = load_entry(conn, tmp_path / "drop", namespace="movielens")
    shutil.copytree(tmp_path / "drop", tmp_path / "copy")
    (tmp_path / NAMESPACES_FILE).write_text('"copy" = "movielens"\n')
    copied = load_entry(conn, tmp_path / "copy")
    for result in (again, copied):
        assert all(r.already_loaded and r.namespace == "movielens_100k" for r in result.loaded)
    assert conn.execute("SELECT DISTINCT namespace FROM raw.ingested_files").fetchall() == [("movielens_100k",)]

    (tmp_path / "copy" / "u.user").write_text("9|30|F|writer|12345\n")  # new content: the mapping applies
    (changed,) = [r for r in load_entry(conn, tmp_path / "copy").loaded if not r.already_loaded]
    assert changed.namespace == "movielens"
    assert conn.execute("SELECT namespace FROM raw.ingested_files WHERE file_id = %s",
                        (changed.file_id,)).fetchone() == ("movielens",)
