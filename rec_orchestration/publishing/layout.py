"""What a publication is made of: the published tables, their partitioned storage in ``recs_store`` and
the views in ``recs`` that readers use (the downstream contract), created by :func:`ensure_layout`."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from rec_orchestration.db.tables import packaged_sql

STORE = "recs_store"
CONTRACT = "recs"
# Bump when a view definition changes: views are replaced only then, because DROP/CREATE VIEW takes
# an ACCESS EXCLUSIVE lock and so waits for (and blocks) readers. Storage tables are created if
# missing, never altered: a change to their columns needs a migration of its own.
LAYOUT_VERSION = "1"
DEFAULT_KEEP = 3
MIN_KEEP = 2  # the live publication and the one before it: a reader's snapshot may still name it
PUBLISH_LOCK = "rec_orchestration.publish"
LIVE = sql.SQL("(SELECT publication_id FROM recs_store.live)")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = False


@dataclass(frozen=True)
class PublishedTable:
    """One published table: its columns (without ``publication_id``) and primary key."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    description: str

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def partition(self, publication_id: int) -> str:
        return f"{self.name}_p{publication_id}"


def _columns(*spec: str) -> tuple[Column, ...]:
    """``"name type"`` or ``"name type null"``."""
    columns = []
    for item in spec:
        name, _, rest = item.partition(" ")
        nullable = rest.endswith(" null")
        columns.append(Column(name, rest.removesuffix(" null"), nullable))
    return tuple(columns)


TABLES: dict[str, PublishedTable] = {table.name: table for table in (
    PublishedTable(
        "user_recommendations",
        _columns("user_id bigint", "product_id bigint", "rank integer", "score double precision", "reason text",
                 "because_product_id bigint null", "model_name text", "model_version text", "run_id text",
                 "generated_at timestamptz"),
        ("user_id", "rank"),
        "Top-k products per user, best first; products the user interacted with are excluded."),
    PublishedTable(
        "similar_products",
        _columns("product_id bigint", "similar_product_id bigint", "rank integer", "score double precision",
                 "method text"),
        ("product_id", "method", "rank"),
        "Nearest products per product, per method (collaborative, content, embedding) and 'blended'."),
    PublishedTable(
        "popular_products",
        _columns("product_id bigint", "rank integer", "score double precision", "model_version text"),
        ("rank",),
        "Every product ranked by weighted popularity, time-decayed or plain (whichever predicted held-out "
        "interactions better): the cold-start fallback."),
    PublishedTable(
        "popular_products_by_category",
        _columns("category_id bigint", "category text", "product_id bigint", "rank integer",
                 "score double precision"),
        ("category_id", "rank"),
        "The popularity ranking within each (leaf) category."),
    PublishedTable(
        "products",
        _columns("product_id bigint", "title text null", "main_category text null", "category text null",
                 "price numeric(12, 2) null", "average_rating numeric(3, 2) null", "rating_count integer null"),
        ("product_id",),
        "Product metadata as of the publication, for the hydrating views."),
)}

# Hydrating views: the published rows with the product metadata of the same publication.
DETAILED_VIEWS = {
    "user_recommendations_detailed": """
        SELECT r.user_id, r.rank, r.product_id, p.title, p.main_category, p.category, p.price,
               p.average_rating, p.rating_count, r.score, r.reason, r.because_product_id,
               b.title AS because_title, r.model_name, r.model_version, r.generated_at
        FROM recs_store.user_recommendations r
        JOIN recs_store.products p ON p.publication_id = r.publication_id AND p.product_id = r.product_id
        LEFT JOIN recs_store.products b ON b.publication_id = r.publication_id AND b.product_id = r.because_product_id
        WHERE r.publication_id = {live}""",
    "similar_products_detailed": """
        SELECT s.product_id, s.method, s.rank, s.similar_product_id, p.title, p.main_category, p.category,
               p.price, p.average_rating, p.rating_count, s.score
        FROM recs_store.similar_products s
        JOIN recs_store.products p ON p.publication_id = s.publication_id AND p.product_id = s.similar_product_id
        WHERE s.publication_id = {live}""",
    "popular_products_detailed": """
        SELECT r.rank, r.product_id, p.title, p.main_category, p.category, p.price, p.average_rating,
               p.rating_count, r.score
        FROM recs_store.popular_products r
        JOIN recs_store.products p ON p.publication_id = r.publication_id AND p.product_id = r.product_id
        WHERE r.publication_id = {live}""",
}

CONTRACT_VIEWS = {
    "recommendation_runs": """
        SELECT p.publication_id, p.run_id, p.model_name, p.model_version, p.evaluation, p.k, p.users,
               p.users_personalized, p.users_popular, p.row_counts,
               (p.row_counts ->> 'user_recommendations')::bigint AS rows_written,
               p.started_at, p.published_at AS finished_at, p.retired_at,
               p.publication_id = {live} AS is_live, p.retired_at IS NULL AS can_roll_back
        FROM recs_store.publications p""",
    "publication_history": """
        SELECT s.switched_at, s.action, s.publication_id, s.previous_id, p.model_name, p.model_version, p.run_id
        FROM recs_store.switches s JOIN recs_store.publications p USING (publication_id)""",
}


def _column_sql(column: Column) -> sql.Composable:
    return sql.SQL("{} {}{}").format(sql.Identifier(column.name), sql.SQL(column.type),
                                     sql.SQL("" if column.nullable else " NOT NULL"))


def _create_parent(conn: psycopg.Connection, table: PublishedTable) -> None:
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (publication_id bigint NOT NULL, {}, PRIMARY KEY (publication_id, {})) "
        "PARTITION BY LIST (publication_id)").format(
        sql.Identifier(STORE, table.name), sql.SQL(", ").join(map(_column_sql, table.columns)),
        sql.SQL(", ").join(map(sql.Identifier, table.primary_key))))


def relkind(conn: psycopg.Connection, schema: str, name: str) -> str | None:
    row = conn.execute("""SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = %s AND c.relname = %s""", (schema, name)).fetchone()
    return row[0] if row else None


def ensure_layout(conn: psycopg.Connection) -> None:
    """Create storage and views when missing or of another layout version; otherwise touch nothing.

    Run inside the caller's transaction, under the publish lock.
    """
    for schema in (STORE, CONTRACT):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    if relkind(conn, STORE, "meta") == "r":
        current = conn.execute("SELECT value FROM recs_store.meta WHERE key = 'layout_version'").fetchone()
        if current and current[0] == LAYOUT_VERSION:
            return
    conn.execute(packaged_sql("recs_store.sql"))
    for table in TABLES.values():
        _create_parent(conn, table)
    views = {name: sql.SQL("SELECT {} FROM {} WHERE publication_id = {live}").format(
        sql.SQL(", ").join(map(sql.Identifier, table.column_names)), sql.Identifier(STORE, name), live=LIVE)
        for name, table in TABLES.items()}
    views |= {name: sql.SQL(text).format(live=LIVE) for name, text in {**DETAILED_VIEWS, **CONTRACT_VIEWS}.items()}
    for name, query in views.items():
        # DROP + CREATE, not CREATE OR REPLACE: a changed layout may drop or reorder columns.
        conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(CONTRACT, name)))
        conn.execute(sql.SQL("CREATE VIEW {} AS {}").format(sql.Identifier(CONTRACT, name), query))
    for name, table in TABLES.items():
        conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(sql.Identifier(CONTRACT, name),
                                                                sql.Literal(table.description)))
    conn.execute("""INSERT INTO recs_store.meta VALUES ('layout_version', %s)
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value""", (LAYOUT_VERSION,))
