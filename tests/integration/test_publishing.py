"""Publications as readers see them, on a real PostgreSQL: whole swaps that wait for no reader,
a kill -9 mid-publish, rollback, retirement. Rows are synthetic here (the pipeline's own publish is
covered by test_pipeline.py); the storage, views, locks and transactions are the real ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from rec_orchestration import publishing, settings
from tests.support import query, scalar

USERS, K = 200, 20


def make_rows(tag: int, users: int = USERS) -> dict[str, list[tuple]]:
    """A complete publication whose every row carries ``tag`` (in run_id and scores), so a reader
    can tell which publication each row came from."""
    now = datetime.now(UTC)
    return {
        "user_recommendations": [(user, 1000 * tag + rank, rank, float(tag), "popular", None, "popularity", f"v{tag}",
                                  f"run-{tag}", now) for user in range(1, users + 1) for rank in range(1, K + 1)],
        "similar_products": [(product, product + 1, 1, float(tag), "blended") for product in range(1, 51)],
        "popular_products": [(product, product, float(tag), f"v{tag}") for product in range(1, 51)],
        "popular_products_by_category": [(7, "Books > Fiction", product, product, float(tag))
                                         for product in range(1, 11)],
        "products": [(1000 * tag + rank, f"product {rank} of {tag}", "Books", "Books > Fiction", None, None, None)
                     for rank in range(1, K + 1)],
    }


def publish(db, tag: int, keep: int = publishing.DEFAULT_KEEP, **kwargs) -> publishing.Publication:
    kwargs.setdefault("retire_timeout_ms", 500)
    kwargs.setdefault("settle_timeout_ms", 300)  # tests below hold transactions open across publishes
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        return publishing.publish(
            conn, make_rows(tag), run_id=f"run-{tag}", model_name="popularity", model_version=f"v{tag}",
            evaluation={"ndcg_at_k": 0.1}, k=K, user_counts={"users": USERS, "popular": USERS},
            started_at=datetime.now(UTC), keep=keep, **kwargs)


def live_tags(db) -> list[tuple]:
    return query(db, "SELECT DISTINCT run_id FROM recs.user_recommendations")


def test_a_publication_is_one_whole_set_and_the_views_show_the_live_one(warehouse_env):
    db = warehouse_env
    assert publish(db, 1).live
    assert scalar(db, "SELECT count(*) FROM recs.user_recommendations") == USERS * K
    assert live_tags(db) == [("run-1",)]
    second = publish(db, 2)
    assert live_tags(db) == [("run-2",)]
    assert scalar(db, "SELECT count(*) FROM recs.user_recommendations") == USERS * K
    assert second.row_counts == {"user_recommendations": USERS * K, "similar_products": 50, "popular_products": 50,
                                 "popular_products_by_category": 10, "products": K}
    # The hydrating view joins the product metadata of the same publication.
    assert query(db, """SELECT title, category FROM recs.user_recommendations_detailed
                        WHERE user_id = 3 AND rank = 2""") == [("product 2 of 2", "Books > Fiction")]
    runs = query(db, "SELECT publication_id, run_id, is_live, rows_written FROM recs.recommendation_runs ORDER BY 1")
    assert runs == [(1, "run-1", False, USERS * K), (2, "run-2", True, USERS * K)]
    assert [row[1:3] for row in query(db, "SELECT * FROM recs.publication_history ORDER BY switched_at")] == [
        ("publish", 1), ("publish", 2)]


def test_readers_see_the_old_or_the_new_set_never_a_mix_and_never_wait(warehouse_env):
    db = warehouse_env
    publish(db, 1)
    stop = threading.Event()
    seen: list[tuple] = []
    errors: list[BaseException] = []

    def reader() -> None:
        with psycopg.connect(db.conninfo(), autocommit=True) as conn:
            while not stop.is_set():
                try:
                    seen.append(conn.execute("""SELECT count(*), count(DISTINCT run_id), min(run_id)
                                                FROM recs.user_recommendations""").fetchone())
                except BaseException as error:  # noqa: BLE001 - every error is a failure of the test
                    errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    # A long analytic query holds the live publication for the whole test: the swaps must not wait for it.
    long_reader = psycopg.connect(db.conninfo())
    long_reader.execute("SELECT count(*) FROM recs.user_recommendations_detailed").fetchone()
    try:
        for tag in range(2, 6):
            publish(db, tag, lock_timeout_ms=1000)  # an ATTACH or pointer update waiting for a reader would fail
        # Publications 1 and 2 (keep 3) are retired, but dropping their data has to wait for the long
        # reader: postponed, not forced.
        assert scalar(db, "SELECT count(*) FROM recs.recommendation_runs WHERE retired_at IS NOT NULL") == 2
        assert scalar(db, """SELECT count(*) FROM pg_tables WHERE schemaname = 'recs_store'
                             AND tablename IN ('user_recommendations_p1', 'user_recommendations_p2')""") == 2
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        long_reader.close()
    assert not errors
    assert len(seen) > 20
    tags = {row[2] for row in seen}
    assert {"run-1", "run-5"} <= tags
    assert all(row[:2] == (USERS * K, 1) for row in seen), {row for row in seen if row[:2] != (USERS * K, 1)}
    # With the reader gone, the next publish finishes the postponed retirements.
    publish(db, 6)
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        assert publishing.partitions(conn)["user_recommendations"] == [4, 5, 6]


KILLED_PUBLISH = textwrap.dedent("""
    import sys, time
    from datetime import UTC, datetime
    import psycopg
    from rec_orchestration import publishing, settings
    from tests.integration.test_publishing import K, USERS, make_rows

    def rows_then_hang():
        rows = make_rows(2)
        def slow(table):
            for number, row in enumerate(table):
                if number == 1000:
                    print("loading", flush=True)
                    time.sleep(600)  # killed here, in the middle of COPY
                yield row
        rows["user_recommendations"] = slow(rows["user_recommendations"])
        return rows

    with psycopg.connect(sys.argv[1], autocommit=True) as conn:
        publishing.publish(conn, rows_then_hang(), run_id="run-2", model_name="popularity", model_version="v2",
                           evaluation={}, k=K, user_counts={}, started_at=datetime.now(UTC))
""")


def kill_when_it_says(script: str, word: str, db) -> None:
    """Run ``script`` (a publish) in a child process and ``kill -9`` it once it prints ``word``."""
    child = subprocess.Popen([sys.executable, "-c", script, db.conninfo()], stdout=subprocess.PIPE, text=True,
                             cwd=settings.PROJECT_ROOT)
    try:
        assert child.stdout.readline().strip() == word
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def test_a_kill_during_publish_leaves_the_previous_set_live_and_the_next_publish_succeeds(warehouse_env):
    db = warehouse_env
    publish(db, 1)
    before = query(db, "SELECT * FROM recs.user_recommendations ORDER BY user_id, rank")
    kill_when_it_says(KILLED_PUBLISH, "loading", db)
    # The server ends the dead client's transaction: nothing of publication 2 remains or shows.
    deadline = time.monotonic() + 30
    while scalar(db, """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                        AND pid <> pg_backend_pid() AND xact_start IS NOT NULL""") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert query(db, "SELECT * FROM recs.user_recommendations ORDER BY user_id, rank") == before
    assert scalar(db, "SELECT count(*) FROM recs.recommendation_runs") == 1
    assert scalar(db, """SELECT count(*) FROM pg_tables WHERE schemaname = 'recs_store'
                         AND tablename LIKE '%%\\_p2'""") == 0
    assert publish(db, 3).live
    assert live_tags(db) == [("run-3",)]


def test_rollback_pins_an_earlier_publication_until_unpinned(warehouse_env, monkeypatch):
    from click.testing import CliRunner

    from rec_orchestration.cli import main

    db = warehouse_env
    for tag in (1, 2, 3):
        publish(db, tag, keep=2)
    # keep=2: publication 1's data is gone, its record stays.
    assert query(db, "SELECT publication_id, can_roll_back FROM recs.recommendation_runs ORDER BY 1") == [
        (1, False), (2, True), (3, True)]
    runner = CliRunner()
    result = runner.invoke(main, ["recs", "rollback", "--to", "1", "--yes"])
    assert result.exit_code != 0 and "publication 1 is not kept" in result.output
    assert live_tags(db) == [("run-3",)]

    result = runner.invoke(main, ["recs", "rollback", "--yes"])
    assert result.exit_code == 0, result.output
    assert live_tags(db) == [("run-2",)]
    listing = runner.invoke(main, ["recs", "publications"]).output
    assert "pinned" in listing and "run-2" in listing

    # A scheduled publish while pinned keeps its publication aside; the rolled-back one stays live,
    # and retirement never drops the live publication.
    assert not publish(db, 4, keep=2).live
    assert live_tags(db) == [("run-2",)]
    assert runner.invoke(main, ["recs", "unpin", "--yes"]).exit_code == 0
    assert live_tags(db) == [("run-4",)]
    actions = [row[0] for row in query(db, "SELECT action FROM recs.publication_history ORDER BY switched_at")]
    assert actions == ["publish", "publish", "publish", "rollback", "unpin"]


def test_a_refused_publication_changes_nothing(warehouse_env):
    db = warehouse_env
    publish(db, 1)

    def refuse(conn, partitions):
        assert conn.execute(f"SELECT count(*) FROM {partitions['user_recommendations'].as_string(conn)}"
                            ).fetchone()[0] == USERS * K  # the new partition is complete, only not live
        raise publishing.PublishError("checks failed")

    with pytest.raises(publishing.PublishError):
        publish(db, 2, validate=refuse)
    assert live_tags(db) == [("run-1",)]
    assert scalar(db, "SELECT count(*) FROM recs.recommendation_runs") == 1


def test_a_table_given_as_a_query_is_loaded_by_the_database_like_rows_given_in_python(warehouse_env):
    """The pipeline passes its recommendations as a query over the scoring tables (ten rows per user do not
    go through Python); the publication is the one the same rows given as tuples make."""
    db = warehouse_env
    publish(db, 1)
    expected = query(db, "SELECT * FROM recs.user_recommendations ORDER BY user_id, rank")
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.scored AS SELECT user_id, product_id, rank, score, reason, "
                     "because_product_id, model_name, model_version FROM recs.user_recommendations")
        rows = make_rows(2) | {"user_recommendations": publishing.Query(
            sql.SQL("SELECT s.*, %s::text, %s::timestamptz FROM public.scored AS s WHERE s.rank <= %s"),
            ("run-1", expected[0][-1], K - 1))}
        second = publishing.publish(conn, rows, run_id="run-2", model_name="popularity", model_version="v2",
                                    evaluation={}, k=K, user_counts={}, started_at=datetime.now(UTC),
                                    settle_timeout_ms=300, retire_timeout_ms=500)
    assert second.live and second.row_counts["user_recommendations"] == USERS * (K - 1)
    assert query(db, "SELECT * FROM recs.user_recommendations ORDER BY user_id, rank") == [
        row for row in expected if row[2] <= K - 1]
    assert scalar(db, "SELECT rows_written FROM recs.recommendation_runs WHERE is_live") == USERS * (K - 1)


KILLED_BETWEEN_COMMITS = textwrap.dedent("""
    import sys, time
    from datetime import UTC, datetime
    import psycopg
    from rec_orchestration import publishing
    from tests.integration.test_publishing import K, make_rows

    def hang(conn, timeout_ms):  # the partitions are attached and committed; the pointer has not moved
        print("attached", flush=True)
        time.sleep(600)

    publishing.swap.settle = hang
    with psycopg.connect(sys.argv[1], autocommit=True) as conn:
        publishing.publish(conn, make_rows(2), run_id="run-2", model_name="popularity", model_version="v2",
                           evaluation={}, k=K, user_counts={}, started_at=datetime.now(UTC))
""")


def test_a_kill_between_attach_and_pointer_leaves_a_complete_publication_aside(warehouse_env):
    db = warehouse_env
    publish(db, 1)
    kill_when_it_says(KILLED_BETWEEN_COMMITS, "attached", db)
    assert live_tags(db) == [("run-1",)]
    assert query(db, "SELECT publication_id, is_live, can_roll_back FROM recs.recommendation_runs ORDER BY 1") == [
        (1, True, True), (2, False, True)]
    # Its data is whole: an operator may make it live, and the next publish goes on as usual.
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        assert all(2 in ids for ids in publishing.partitions(conn).values())
    third = publish(db, 3, keep=2)
    assert third.live and third.retired == [1]
    assert live_tags(db) == [("run-3",)]
    assert publish(db, 4, keep=2).retired == [2]  # retired in turn, like any kept publication


def test_a_half_retired_publication_is_never_made_live_again_and_its_rest_goes_later(warehouse_env):
    from click.testing import CliRunner

    from rec_orchestration.cli import main

    db = warehouse_env
    publish(db, 1, keep=2)
    publish(db, 2, keep=2)
    # A reader holds the popular products (all their partitions) while publish 3 retires publication 1:
    # its other tables go, popular_products_p1 has to wait, and the retirement stops there.
    reader = psycopg.connect(db.conninfo())
    reader.execute("SELECT count(*) FROM recs.popular_products").fetchone()
    try:
        assert publish(db, 3, keep=2).retired == [1]
        with psycopg.connect(db.conninfo(), autocommit=True) as conn:
            left = publishing.partitions(conn)
        assert 1 not in left["user_recommendations"]
        assert scalar(db, """SELECT count(*) FROM pg_tables WHERE schemaname = 'recs_store'
                             AND tablename = 'popular_products_p1'""") == 1  # its detach waits for the reader
        result = CliRunner().invoke(main, ["recs", "rollback", "--to", "1", "--yes"])
        assert result.exit_code != 0 and "publication 1 is not kept" in result.output
        assert live_tags(db) == [("run-3",)]
    finally:
        reader.close()
    publish(db, 4, keep=2)
    assert scalar(db, """SELECT count(*) FROM pg_tables WHERE schemaname = 'recs_store'
                         AND tablename ~ '_p[12]$'""") == 0
