"""What a set of recommendations must satisfy to go live: every user covered, at most k each, nothing the
user interacted with, no product twice, and a popularity ranking to fall back on. Checked on a new
publication's partitions before they are attached, and on the live views by the asset check."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

PROBLEMS_QUERY = """
    SELECT (SELECT count(*) FROM core.users u WHERE NOT EXISTS
               (SELECT 1 FROM {recs} r WHERE r.user_id = u.user_id)) AS users_without_recommendations,
           (SELECT count(*) FROM {recs} r JOIN core.interactions v USING (user_id, product_id))
               AS recommendations_already_seen,
           (SELECT count(*) FROM (SELECT user_id, product_id FROM {recs} GROUP BY 1, 2 HAVING count(*) > 1) d)
               AS duplicate_recommendations,
           (SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM {recs} GROUP BY user_id) c)
               AS max_per_user,
           (SELECT count(*) FROM {popular}) AS popular_products"""

PROBLEMS = ("users_without_recommendations", "recommendations_already_seen", "duplicate_recommendations",
            "max_per_user", "popular_products")  # the query's columns


def recommendation_problems(conn: psycopg.Connection, recs: sql.Composable, popular: sql.Composable) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql.SQL(PROBLEMS_QUERY).format(recs=recs, popular=popular)).fetchone()


def refusal(problems: dict, k: int) -> str | None:
    """Why a set of recommendations must not go live, or None."""
    wrong = {name: problems[name] for name in ("users_without_recommendations", "recommendations_already_seen",
                                                "duplicate_recommendations") if problems[name]}
    if problems["max_per_user"] > k:
        wrong["max_per_user"] = problems["max_per_user"]
    if not problems["popular_products"]:
        wrong["popular_products"] = 0
    return f"refusing to publish: {wrong}" if wrong else None
