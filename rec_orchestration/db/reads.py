"""Every read of the warehouse that the model, similarity, evaluation and publish steps make.

Each function takes anything with the query helpers of :class:`rec_orchestration.db.warehouse.Queries`
(the Dagster ``PostgresResource`` is one) and returns plain Python or pandas values.
Reads that feed a model are ordered, so the same rows give the same split and data version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg import sql

from rec_orchestration.db.tables import qualified
from rec_orchestration.db.warehouse import Queries, copy_columns

if TYPE_CHECKING:
    import pandas as pd


class EmptyInputError(RuntimeError):
    """A step's input table has no rows: there is nothing to train on or publish."""


# One row per (user, product), weighted by dbt (var interaction_weights). The time as integer microseconds
# since the epoch (a timestamptz's exact value; extract returns numeric), so it travels as a number
# (Queries.read_columns). No ORDER BY: see interactions_frame.
INTERACTIONS_QUERY = sql.SQL("""
    SELECT user_id, product_id, weight::double precision AS weight,
           (extract(epoch FROM last_at) * 1000000)::bigint AS ts
    FROM core.interactions
""")
# The order every reader gets, so the split (ties in time broken by product) and the data version are the
# same on every read: (user_id, product_id) is the table's key, so it is a total order.
INTERACTIONS_ORDER = ("user_id", "ts", "product_id")


def interactions_frame(db: Queries) -> pd.DataFrame:
    """``user_id, product_id, weight (float), ts (UTC)`` of every interaction, ordered by user, time and product;
    raises when there is none.

    Sorted here, not by the database: PostgreSQL walked the primary key (user, product), fetching the heap in
    index order, and sorted each user's rows by time. At 10M interactions this read took 68.5 s so, 25-28.5 s
    now (the same frame); the database's COPY alone took 52 s ordered and 11 s as stored."""
    return _ordered(db.read_columns(INTERACTIONS_QUERY, INTERACTIONS_DTYPES))


def interactions_snapshot(db: Queries) -> tuple[pd.DataFrame, str]:
    """:func:`interactions_frame` and :func:`interactions_version` of the same rows: both read in one
    snapshot (REPEATABLE READ), so the version names exactly the frame even while a build writes."""
    with db.connection() as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        version = _version(conn.execute(INTERACTIONS_VERSION_QUERY).fetchone())
        return _ordered(copy_columns(conn, INTERACTIONS_QUERY, INTERACTIONS_DTYPES)), version


def interactions_version(db: Queries) -> str:
    """A version of every row :func:`interactions_frame` reads, made by the database without sending them: the
    row count and an exclusive-or of a 64-bit hash of each row's user, product, weight and time (any changed,
    added or removed row changes it). For steps that must know whether the interactions are those another
    step read but not read them: at 10M interactions 1.2-1.8 s, the frame 19.7-28.5 s."""
    return _version(db.fetch_all(INTERACTIONS_VERSION_QUERY)[0])


INTERACTIONS_DTYPES = {"user_id": "int64", "product_id": "int64", "weight": "float64", "ts": "int64"}
# hash_record_extended: PostgreSQL 14 and later. Rows are unique by (user_id, product_id), so none cancels out.
INTERACTIONS_VERSION_QUERY = sql.SQL("""
    SELECT count(*), coalesce(bit_xor(hash_record_extended((user_id, product_id, weight, last_at), 0)), 0)
    FROM core.interactions
""")


def _version(row: tuple) -> str:
    count, digest = row
    return f"{count}:{int(digest) & 0xFFFFFFFFFFFFFFFF:016x}"


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame in INTERACTIONS_ORDER with ``ts`` as UTC times; raises when it is empty."""
    import pandas as pd
    if frame.empty:
        raise EmptyInputError("core.interactions is empty: nothing to train on")
    # lexsort's last key is the primary one.
    order = np.lexsort([frame[column].to_numpy() for column in reversed(INTERACTIONS_ORDER)])
    frame = frame.take(order).reset_index(drop=True)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="us", utc=True)
    return frame


def grouped_by_product(db: Queries, query: sql.Composable | str) -> dict[int, list]:
    """Product id -> the second column of every ``(product_id, value)`` row of ``query``, in row order."""
    groups: dict[int, list] = {}
    for product_id, value in db.fetch_all(query):
        groups.setdefault(int(product_id), []).append(value)
    return groups


def item_categories(db: Queries) -> dict[int, list[str]]:
    """Product id -> the category paths it is in (Amazon category paths, MovieLens genres), as text."""
    return grouped_by_product(db, sql.SQL("""
        SELECT pc.product_id, array_to_string(c.path, ' > ') AS path
        FROM core.product_categories pc JOIN core.categories c USING (category_id)
        ORDER BY pc.product_id, path"""))


def product_category_ids(db: Queries) -> dict[int, list[int]]:
    """Product id -> the ids of its categories."""
    return grouped_by_product(db, "SELECT product_id, category_id FROM core.product_categories")


def product_texts(db: Queries) -> pd.DataFrame:
    """``product_id, text``: title, description, main category and category paths, for content similarity."""
    return db.read_dataframe(sql.SQL("""
        SELECT p.product_id,
               concat_ws(' ', p.title, p.description, p.main_category,
                         string_agg(array_to_string(c.path, ' '), ' ' ORDER BY c.path)) AS text
        FROM core.products p
        LEFT JOIN core.product_categories pc USING (product_id)
        LEFT JOIN core.categories c USING (category_id)
        GROUP BY p.product_id
        ORDER BY p.product_id"""))


def product_metadata(db: Queries) -> pd.DataFrame:
    """What the published ``products`` table holds: metadata and the product's deepest category path."""
    return db.read_dataframe(sql.SQL("""
        SELECT p.product_id, p.title, p.main_category,
               (SELECT array_to_string(c.path, ' > ') FROM core.product_categories pc
                JOIN core.categories c USING (category_id)
                WHERE pc.product_id = p.product_id
                ORDER BY cardinality(c.path) DESC, c.category_id LIMIT 1) AS category,
               p.price, p.average_rating, p.rating_count
        FROM core.products p ORDER BY p.product_id"""))


def user_ids(db: Queries) -> np.ndarray:
    """Every user of ``core.users``, ascending."""
    return np.array([row[0] for row in db.fetch_all("SELECT user_id FROM core.users ORDER BY user_id")],
                    dtype=np.int64)


def popularity_ranking(db: Queries) -> pd.DataFrame:
    """``product_id, score, model_version`` of ``ml.popular_products``, best first; raises when empty."""
    ranked = db.read_dataframe(sql.SQL(
        "SELECT product_id, score, model_version FROM ml.popular_products ORDER BY rank"))
    if ranked.empty:
        raise EmptyInputError("ml.popular_products is empty")
    return ranked


def popularity_by_category(db: Queries) -> pd.DataFrame:
    """``category_id, category, product_id, rank, score`` of ``ml.popular_products_by_category``."""
    return db.read_dataframe(sql.SQL("""
        SELECT b.category_id, array_to_string(c.path, ' > ') AS category, b.product_id, b.rank, b.score
        FROM ml.popular_products_by_category b JOIN core.categories c USING (category_id)
        ORDER BY b.category_id, b.rank"""))


def top_popular_products(db: Queries, n: int = 10) -> pd.DataFrame:
    """The ``n`` most popular products with their titles (a preview for the UI)."""
    return db.read_dataframe(sql.SQL("""
        SELECT pp.rank, p.title, p.main_category, round(pp.score::numeric, 2) AS score
        FROM ml.popular_products pp JOIN core.products p USING (product_id)
        ORDER BY pp.rank LIMIT %s"""), (n,))


def item_similarity(db: Queries) -> pd.DataFrame:
    """Every row of ``ml.item_similarity``."""
    return db.read_columns(sql.SQL("SELECT item_id, neighbor_id, score, rank, method FROM ml.item_similarity"),
                           {"item_id": "int64", "neighbor_id": "int64", "score": "float64", "rank": "int64",
                            "method": "object"})


def neighbours_of_most_interacted_product(db: Queries, ranks: int = 3) -> pd.DataFrame:
    """The top ``ranks`` neighbours per method of the most interacted product, with titles (a UI preview)."""
    return db.read_dataframe(sql.SQL("""
        SELECT s.method, s.rank, left(a.title, 40) AS product, left(b.title, 40) AS neighbour,
               round(s.score::numeric, 3) AS score
        FROM ml.item_similarity s
        JOIN core.products a ON a.product_id = s.item_id
        JOIN core.products b ON b.product_id = s.neighbor_id
        WHERE s.item_id = (SELECT product_id FROM core.interactions GROUP BY product_id
                           ORDER BY count(*) DESC, product_id LIMIT 1) AND s.rank <= %s
        ORDER BY s.method, s.rank"""), (ranks,))


def champion_row(db: Queries, run_id: str | None) -> dict[str, Any] | None:
    """The champion chosen by run ``run_id``, or (None) the latest chosen by any run; None if none."""
    if not db.table_exists("ml.model_champions"):
        return None
    if run_id is None:
        frame = db.read_dataframe(sql.SQL("SELECT * FROM ml.model_champions ORDER BY chosen_at DESC LIMIT 1"))
    else:
        frame = db.read_dataframe(sql.SQL("SELECT * FROM ml.model_champions WHERE run_id = %s"), (run_id,))
    return None if frame.empty else frame.iloc[0].to_dict()


def deployed_champion(db: Queries, other_than_run: str) -> dict[str, Any] | None:
    """The latest champion row of another run than ``other_than_run`` whose fit on every interaction was
    deployed (``deployed_version`` set by models/champion): the fit being served; None if none."""
    if not db.table_exists("ml.model_champions"):
        return None
    frame = db.read_dataframe(sql.SQL("""
        SELECT * FROM ml.model_champions WHERE deployed_version IS NOT NULL AND run_id <> %s
        ORDER BY chosen_at DESC LIMIT 1"""), (other_than_run,))
    return None if frame.empty else frame.iloc[0].to_dict()


def last_evaluated_versions(db: Queries) -> dict[str, str]:
    """Model name -> the version the latest evaluation (ml/model_evaluations) compared; {} before any."""
    if not db.table_exists("ml.model_evaluations"):
        return {}
    rows = db.fetch_all("""
        SELECT model_name, model_version FROM ml.model_evaluations
        WHERE evaluated_at = (SELECT max(evaluated_at) FROM ml.model_evaluations) ORDER BY model_name""")
    return {str(name): str(version) for name, version in rows}


def training_round(db: Queries, run_id: str) -> dict[str, Any] | None:
    """Run ``run_id``'s decision for its models (ml.training_rounds: kept, versions, why); None if it made none."""
    if not db.table_exists("ml.training_rounds"):
        return None
    rows = db.fetch_all("SELECT kept, versions, why FROM ml.training_rounds WHERE run_id = %s", (run_id,))
    return {"kept": bool(rows[0][0]), "versions": dict(rows[0][1]), "why": str(rows[0][2])} if rows else None


def interaction_count(db: Queries) -> int:
    """The rows of ``core.interactions``."""
    return int(db.fetch_all("SELECT count(*) FROM core.interactions")[0][0])


def evaluation_metrics(db: Queries, model_name: str, model_version: str, k: int) -> dict[str, float]:
    """A model version's evaluation row (precision, recall, nDCG, MAP, coverage at k); {} if none."""
    frame = db.read_dataframe(sql.SQL("""
        SELECT precision_at_k, recall_at_k, ndcg_at_k, map, coverage, users AS evaluated_users
        FROM ml.model_evaluations WHERE model_name = %s AND model_version = %s AND k = %s"""),
        (model_name, model_version, int(k)))
    return {} if frame.empty else {key: float(value) for key, value in frame.iloc[0].items()}


# Per file of a kind: does the table hold exactly rows_loaded rows, the quarantine rows_rejected, and
# rows_read = rows_loaded + rows_rejected? Returns the files that disagree.
LEDGER_DISAGREEMENTS = """
    SELECT f.file_id, f.path, f.rows_read, f.rows_loaded, f.rows_rejected,
           coalesce(t.n, 0) AS rows_in_table, coalesce(q.n, 0) AS rows_in_quarantine
    FROM raw.ingested_files AS f
    LEFT JOIN (SELECT file_id, count(*) AS n FROM {table} GROUP BY file_id) AS t USING (file_id)
    LEFT JOIN (SELECT file_id, count(*) AS n FROM raw.rejected_records GROUP BY file_id) AS q USING (file_id)
    WHERE f.record_kind = %s AND f.finished_at IS NOT NULL
      AND (f.rows_read <> f.rows_loaded + f.rows_rejected
           OR coalesce(t.n, 0) <> f.rows_loaded OR coalesce(q.n, 0) <> f.rows_rejected)
    ORDER BY f.file_id
"""


def ledger_disagreements(db: Queries, kind: str) -> pd.DataFrame:
    """The loaded files of record kind ``kind`` whose ledger row, table rows and quarantine disagree."""
    return db.read_dataframe(sql.SQL(LEDGER_DISAGREEMENTS).format(table=qualified(f"raw.{kind}")), (kind,))


def ledger_totals(db: Queries, kind: str) -> tuple[int, int]:
    """Files of record kind ``kind`` in the ledger, and the rows read from them."""
    files, rows_read = db.fetch_all(
        "SELECT count(*), coalesce(sum(rows_read), 0) FROM raw.ingested_files WHERE record_kind = %s", (kind,))[0]
    return int(files), int(rows_read)
