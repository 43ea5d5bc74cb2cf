"""Data-quality validation of warehouse tables with Great Expectations (GX Core 1.x).

``dagster-ge`` does not support GX 1.x, so this module drives GX directly:

* one in-memory (*ephemeral*) GX context per process: no ``gx/`` project directory, no data docs,
  no progress bars, analytics off (``GX_ANALYTICS_ENABLED=false``; this GX release sends none
  anyway). The context and one Postgres data source per warehouse URL are cached, so later
  validations reuse the SQLAlchemy engine;
* each call validates one whole table against a list of expectation objects with result format
  ``SUMMARY`` plus ``include_unexpected_rows`` and ``unexpected_index_column_names``: failing map
  expectations then report up to ``sample_size`` offending rows by key (``file_id``/``line_number``
  for the raw tables) and, for single-column ones, the SQL that selects all of them;
* the outcome is returned as plain, JSON-serialisable dataclasses;
  ``resources/great_expectations.py`` turns it into Dagster asset-check metadata.

``great_expectations`` is imported on first use (about 2 s), not when Dagster loads the code location.
"""

import base64
import copy
import datetime as dt
import decimal
import hashlib
import math
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rec_orchestration.db.failures import DatabaseUnavailable, connection_lost_in

if TYPE_CHECKING:
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.data_context import EphemeralDataContext
    from great_expectations.datasource.fluent import PostgresDatasource
    from great_expectations.expectations import Expectation

#: Columns that identify a row of the raw tables; used to point at offending rows.
DEFAULT_KEY_COLUMNS: tuple[str, ...] = ("file_id", "line_number")

_BATCH_DEFINITION = "whole_table"


# -- results ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation; every field is JSON-serialisable.

    ``sample``: up to ``sample_size`` offending rows as ``{key columns..., checked column(s)...}``
    when the table has the key columns, else offending values. ``unexpected_query``: SQL that
    selects all offending rows (map expectations only). ``error``: the exception message when the
    expectation could not be evaluated (then ``success`` is False).
    """

    expectation: str
    column: str | None
    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    unexpected_query: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class TableValidation:
    """The result of validating one table against one suite."""

    success: bool
    suite_name: str
    table: str
    row_count: int
    results: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [outcome for outcome in self.results if not outcome.success]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- GX session (one per process) -------------------------------------------------------------------


class _GXSession:
    """The process's ephemeral GX context and the data sources it has built, one per URL."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._context: EphemeralDataContext | None = None
        self._datasources: dict[str, PostgresDatasource] = {}

    def context(self) -> "EphemeralDataContext":
        if self._context is None:
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
            import great_expectations as gx
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
                ProgressBarsConfig,
            )

            config = DataContextConfig(
                store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                analytics_enabled=False,
                progress_bars=ProgressBarsConfig(globally=False),
            )
            self._context = gx.get_context(mode="ephemeral", project_config=config)
        return self._context

    def datasource(self, sqlalchemy_url: str) -> "PostgresDatasource":
        datasource = self._datasources.get(sqlalchemy_url)
        if datasource is None:
            # The name is derived from the URL but does not show it (the URL may carry a password).
            name = "warehouse_" + hashlib.sha256(sqlalchemy_url.encode()).hexdigest()[:16]
            datasource = self.context().data_sources.add_postgres(name=name, connection_string=sqlalchemy_url)
            self._datasources[sqlalchemy_url] = datasource
        return datasource

    def reset(self) -> None:
        """Forget the context and the data sources, disposing of their connection pools."""
        with self.lock:
            for datasource in self._datasources.values():
                datasource.get_engine().dispose()
            self._datasources.clear()
            self._context = None


_SESSION = _GXSession()


def reset_gx_session() -> None:
    """Drop the cached GX context and dispose of its database engines (e.g. before dropping a database)."""
    _SESSION.reset()


# -- validation -------------------------------------------------------------------------------------


def validate_table(
    sqlalchemy_url: str,
    schema: str,
    table: str,
    expectations: Sequence["Expectation"],
    suite_name: str,
    sample_size: int = 5,
    key_columns: Sequence[str] = DEFAULT_KEY_COLUMNS,
) -> TableValidation:
    """Validate the whole table ``schema.table`` against ``expectations``.

    ``sqlalchemy_url``: ``postgresql+psycopg2://...`` or ``postgresql+psycopg://...``.
    ``key_columns``: columns that identify offending rows in the samples; those the table lacks
    are left out. An empty table passes every map expectation (GX treats them as vacuously true).
    """
    import great_expectations as gx
    import sqlalchemy as sa

    with _SESSION.lock:
        datasource = _SESSION.datasource(sqlalchemy_url)
        asset_name = f"{schema}.{table}"
        try:
            asset = datasource.get_asset(asset_name)
        except LookupError:
            asset = datasource.add_table_asset(name=asset_name, table_name=table, schema_name=schema)
        try:
            batch_definition = asset.get_batch_definition(_BATCH_DEFINITION)
        except KeyError:
            batch_definition = asset.add_batch_definition_whole_table(_BATCH_DEFINITION)

        engine = datasource.get_engine()
        inspector = sa.inspect(engine)
        table_columns = {column["name"] for column in inspector.get_columns(table, schema=schema)}
        with engine.connect() as conn:
            row_count = int(conn.execute(
                sa.select(sa.func.count()).select_from(sa.table(table, schema=schema))
            ).scalar_one())

        suite = gx.ExpectationSuite(name=suite_name)
        for expectation in expectations:
            # a copy: adding to a suite assigns an id, and the caller's objects stay untouched
            suite.add_expectation(copy.deepcopy(expectation))

        index_columns = [column for column in key_columns if column in table_columns]
        result_format: dict[str, Any] = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": sample_size,
            # up to sample_size whole offending rows per map expectation (LIMIT in SQL); the only
            # way to get row keys for compound-column expectations, whose index list GX skips on SQL
            "include_unexpected_rows": True,
            "return_unexpected_index_query": True,
        }
        if index_columns:
            result_format["unexpected_index_column_names"] = index_columns

        suite_result = batch_definition.get_batch().validate(suite, result_format=result_format)

    outcomes = [_outcome(result, index_columns, sample_size) for result in suite_result.results]
    # GX turns an expectation's exception into a failed result; a lost connection is not a data problem.
    lost = [outcome.error for outcome in outcomes if outcome.error and connection_lost_in(outcome.error)]
    if lost:
        raise DatabaseUnavailable(f"Great Expectations lost its database connection validating {asset_name}: "
                                  f"{lost[0].strip().splitlines()[0]}")
    return TableValidation(
        success=bool(suite_result.success) and all(outcome.success for outcome in outcomes),
        suite_name=suite_name,
        table=asset_name,
        row_count=row_count,
        results=outcomes,
    )


def _outcome(result: "ExpectationValidationResult", key_columns: Sequence[str], sample_size: int) -> ExpectationOutcome:
    """One GX expectation result -> :class:`ExpectationOutcome`."""
    config = result.expectation_config
    kwargs = {key: value for key, value in (config.kwargs if config else {}).items() if key != "batch_id"}
    details: Mapping[str, Any] = result.result or {}
    exception = result.exception_info or {}

    checked = _checked_columns(kwargs)
    sample = _sample(details, [*key_columns, *checked], sample_size)

    query = details.get("unexpected_index_query")
    if "column_list" in kwargs:
        # GX 1.24 renders this query for compound-column expectations with an ambiguous column
        # reference and a cross join: it does not run, so it is not passed on.
        query = None

    error = exception.get("exception_message") if exception.get("raised_exception") else None
    percent = details.get("unexpected_percent")
    return ExpectationOutcome(
        expectation=config.type if config else "unknown",
        column=", ".join(checked) or None,
        success=bool(result.success) and error is None,
        observed_value=_jsonable(details.get("observed_value")),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=None if percent is None else float(percent),
        sample=sample,
        kwargs=_jsonable(kwargs),
        description=config.description if config else None,
        unexpected_query=query if isinstance(query, str) else None,
        error=error,
    )


def _checked_columns(kwargs: Mapping[str, Any]) -> list[str]:
    if kwargs.get("column"):
        return [kwargs["column"]]
    if kwargs.get("column_list"):
        return list(kwargs["column_list"])
    return [kwargs[key] for key in ("column_A", "column_B") if kwargs.get(key)]


def _sample(details: Mapping[str, Any], columns: Sequence[str], sample_size: int) -> list[Any]:
    """Offending rows cut down to key and checked columns; else offending values."""
    rows = details.get("unexpected_rows")
    if rows is not None and hasattr(rows, "to_dict"):  # a DataFrame (pandas engine)
        rows = rows.to_dict("records")
    if rows:
        return [
            _jsonable({column: row[column] for column in dict.fromkeys(columns) if column in row})
            for row in list(rows)[:sample_size]
        ]
    for key in ("partial_unexpected_index_list", "partial_unexpected_list"):
        if details.get(key):
            return _jsonable(list(details[key])[:sample_size])
    return []


def _jsonable(value: Any) -> Any:
    """Plain JSON types; Decimal, datetime, date, UUID and bytes become strings, NaN becomes None."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    return str(value)
