"""Versioned publications of the tables downstream applications read: the ``recs`` contract.

A *publication* is one consistent set of published tables (recommendations, similar products,
popular products, the product metadata they refer to), made by one publish run. Storage is private,
in schema ``recs_store`` (``rec_reader`` cannot read it):

- ``publications``: one row per publication (run, model, metrics, row counts, times, retirement);
- ``live``: one row, the live publication id and whether it is pinned (by a rollback);
- ``switches``: every change of the live publication (publish, rollback), for "which model made
  which recommendation, over time";
- one table per published table, LIST-partitioned by ``publication_id``: a partition per publication.

Readers use the views in ``recs``, which select the partitions of the live publication
(``WHERE publication_id = (SELECT publication_id FROM recs_store.live)``). A publish builds, loads,
indexes and checks its partitions as standalone tables, attaches them (still not what the pointer
names, so invisible) and commits; then, once the transactions that opened the tables before the
attach have ended (``swap.settle``), a second transaction updates the one-row pointer. ``ATTACH
PARTITION`` takes SHARE UPDATE EXCLUSIVE on the parent, which does not conflict with readers'
ACCESS SHARE, and the pointer update is a row update: no reader waits for the swap, and the swap
takes no lock a reader holds. Every statement reads the pointer once, with its snapshot, so it sees
the old publication or the new one, never a mix. A publish that fails or is killed before the
pointer moves leaves the live publication untouched; killed between the two commits, it leaves a
complete publication attached but never made live (shown as kept, retired in turn).

Old publications are kept for rollback (``keep``); older ones are retired after the swap committed:
``DETACH PARTITION ... CONCURRENTLY`` (waits for queries still using them without blocking anyone)
and ``DROP``. A retirement that cannot finish (a reader holds an old partition past the lock
timeout) is finished by the next publish.

Where each part lives: ``layout`` (the tables, their storage and the views), ``swap`` (publish),
``catalog`` (the pointer, kept publications, partitions), ``retire``, ``rollback`` (rollback, unpin).
No Dagster import here (tests/unit/test_layering.py keeps that true): the CLI (``rec recs ...``) and the
benchmarks use it too.
"""

from rec_orchestration.publishing.catalog import (
    Publication,
    PublishError,
    live_publication,
    partitions,
    publications,
)
from rec_orchestration.publishing.layout import DEFAULT_KEEP, MIN_KEEP, STORE, TABLES, ensure_layout
from rec_orchestration.publishing.retire import retire
from rec_orchestration.publishing.rollback import rollback, unpin
from rec_orchestration.publishing.swap import Query, publish

__all__ = ["DEFAULT_KEEP", "MIN_KEEP", "STORE", "TABLES", "Publication", "PublishError", "Query", "ensure_layout",
           "live_publication", "partitions", "publications", "publish", "retire", "rollback", "unpin"]
