"""Steps retried on transient database errors (rec_orchestration/retry.py), through real Dagster runs:
a real refused connection is retried and the retry writes to the real warehouse; a deterministic error
fails the step at once.

No ``from __future__ import annotations`` here: Dagster reads a ``config`` parameter's annotation as
written, and a postponed (string) annotation of a Config class defined in a test module is not resolved.
"""

import socket

import dagster as dg
import psycopg
import psycopg2
import pytest
from dagster_dbt.errors import DagsterDbtCliRuntimeError
from psycopg import errors as pg_errors
from psycopg_pool import PoolClosed, PoolTimeout
from sqlalchemy import exc as sa_exc

from rec_orchestration.db.failures import DatabaseUnavailable, LoginRefused
from rec_orchestration.resources.postgres import PostgresResource
from rec_orchestration.retry import backoff_seconds, is_transient_db_error, retry_transient_db_errors
from tests.support import assert_success, query


def unused_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ProbeConfig(dg.Config):
    unreachable_url: str


def record_attempt(warehouse: PostgresResource, asset: str, attempt: int) -> None:
    warehouse.execute("CREATE TABLE IF NOT EXISTS public.retry_probe (asset text, attempt int)")
    warehouse.execute("INSERT INTO public.retry_probe VALUES (%s, %s)", (asset, attempt))


def connect_on_first_attempt(context: dg.AssetExecutionContext, url: str) -> None:
    if context.retry_number == 0:
        psycopg.connect(url, connect_timeout=5).close()  # refused: a real psycopg.OperationalError


@dg.asset
@retry_transient_db_errors(max_retries=2, base_delay_s=0)
def returns_a_value(context: dg.AssetExecutionContext, config: ProbeConfig, warehouse: PostgresResource) -> int:
    connect_on_first_attempt(context, config.unreachable_url)
    record_attempt(warehouse, "returns_a_value", context.retry_number)
    return context.retry_number


@dg.multi_asset(specs=[dg.AssetSpec("yields_first"), dg.AssetSpec("yields_second")])
@retry_transient_db_errors(max_retries=2, base_delay_s=0)
def yields_results(context: dg.AssetExecutionContext, config: ProbeConfig, warehouse: PostgresResource):
    yield dg.MaterializeResult(asset_key="yields_first", metadata={"attempt": context.retry_number})
    connect_on_first_attempt(context, config.unreachable_url)
    record_attempt(warehouse, "yields_results", context.retry_number)
    yield dg.MaterializeResult(asset_key="yields_second", metadata={"attempt": context.retry_number})


def events_of(result: dg.ExecuteInProcessResult, step_key: str, event_type: str) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.step_key == step_key and e.event_type_value == event_type]


def test_a_refused_connection_is_retried_once_and_the_retry_writes_to_the_warehouse(warehouse_env):
    port = unused_port()
    config = {"config": {"unreachable_url": f"postgresql://nobody@127.0.0.1:{port}/nothing"}}
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([returns_a_value, yields_results], instance=instance,
                                resources={"warehouse": PostgresResource()}, raise_on_error=False,
                                run_config={"ops": {"returns_a_value": config, "yields_results": config}})
        assert_success(result)
        warnings = [entry.user_message for entry in instance.all_logs(result.run_id)
                    if entry.level == 30 and "transient database error" in entry.user_message]

    for step in ("returns_a_value", "yields_results"):
        (retry,) = events_of(result, step, "STEP_UP_FOR_RETRY")
        assert retry.event_specific_data.error.cause.cls_name == "OperationalError"
        assert len(events_of(result, step, "STEP_START")) == 1
        assert len(events_of(result, step, "STEP_RESTARTED")) == 1
        assert len(events_of(result, step, "STEP_SUCCESS")) == 1
    assert result.output_for_node("returns_a_value") == 1
    # The retry ran the whole generator again: its first result was yielded by both attempts.
    materialized = sorted((e.asset_key.to_user_string(), e.materialization.metadata.get("attempt"))
                          for e in result.get_asset_materialization_events())
    assert materialized == [("returns_a_value", None), ("yields_first", dg.IntMetadataValue(0)),
                            ("yields_first", dg.IntMetadataValue(1)), ("yields_second", dg.IntMetadataValue(1))]
    # Only the second attempts reached the database.
    assert query(warehouse_env, "SELECT asset, attempt FROM public.retry_probe ORDER BY asset") == [
        ("returns_a_value", 1), ("yields_results", 1)]
    assert len(warnings) == 2  # one per step, naming the error and the retry
    assert all(f"port {port} failed: Connection refused" in w and "retry 1 of 2" in w for w in warnings)


@dg.asset
@retry_transient_db_errors(base_delay_s=0)
def reads_a_missing_table(warehouse: PostgresResource) -> None:
    warehouse.fetch_all("SELECT * FROM public.no_such_table")


@dg.multi_asset(specs=[dg.AssetSpec("first_key"), dg.AssetSpec("duplicate_key")])
@retry_transient_db_errors(base_delay_s=0)
def violates_a_unique_key(warehouse: PostgresResource):
    warehouse.execute("CREATE TABLE IF NOT EXISTS public.unique_probe (id int PRIMARY KEY)")
    warehouse.execute("INSERT INTO public.unique_probe VALUES (1)")
    yield dg.MaterializeResult(asset_key="first_key")
    warehouse.execute("INSERT INTO public.unique_probe VALUES (1)")
    yield dg.MaterializeResult(asset_key="duplicate_key")


@dg.asset
@retry_transient_db_errors(base_delay_s=0)
def raises_a_failure() -> None:
    raise dg.Failure("the input is wrong: retrying will not help")


@pytest.mark.parametrize(("asset", "error_class"), [
    (reads_a_missing_table, "UndefinedTable"),
    (violates_a_unique_key, "UniqueViolation"),
    (raises_a_failure, "Failure"),
])
def test_a_deterministic_error_fails_the_step_without_a_retry(warehouse_env, asset, error_class):
    result = dg.materialize([asset], resources={"warehouse": PostgresResource()}, raise_on_error=False)
    assert not result.success
    step = asset.op.name
    assert events_of(result, step, "STEP_UP_FOR_RETRY") == []
    assert len(events_of(result, step, "STEP_START")) == 1
    (failure,) = events_of(result, step, "STEP_FAILURE")
    error = failure.step_failure_data.error
    assert error_class in {error.cls_name, error.cause.cls_name if error.cause else None}, error.to_string()


@dg.asset
@retry_transient_db_errors(max_retries=2, base_delay_s=0)
def never_reaches_the_database() -> None:
    psycopg.connect(f"postgresql://nobody@127.0.0.1:{unused_port()}/nothing", connect_timeout=5)


def test_a_step_still_failing_after_max_retries_fails_with_the_original_error():
    result = dg.materialize([never_reaches_the_database], raise_on_error=False)
    assert not result.success
    step = "never_reaches_the_database"
    assert len(events_of(result, step, "STEP_UP_FOR_RETRY")) == 2
    (failure,) = events_of(result, step, "STEP_FAILURE")
    error = failure.step_failure_data.error
    assert "Exceeded max_retries of 2" in error.message
    assert error.cause.cls_name == "OperationalError" and "Connection refused" in error.cause.message


@pytest.mark.parametrize(("error", "transient"), [
    (psycopg.OperationalError("connection failed: Connection refused"), True),
    (pg_errors.AdminShutdown(), True),
    (pg_errors.SerializationFailure(), True),
    (pg_errors.DeadlockDetected(), True),
    (pg_errors.LockNotAvailable(), True),
    (pg_errors.QueryCanceled(), True),
    (pg_errors.TooManyConnections(), True),
    (PoolTimeout("couldn't get a connection after 30.00 sec"), True),
    (pg_errors.UndefinedTable(), False),
    (pg_errors.UniqueViolation(), False),
    (pg_errors.InvalidPassword(), False),
    (psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                              'FATAL:  password authentication failed for user "rec"'), False),
    (psycopg.OperationalError('connection failed: FATAL:  database "nowhere" does not exist'), False),
    (psycopg.OperationalError('connection failed: FATAL:  no pg_hba.conf entry for host "10.0.0.1"'), False),
    (pg_errors.StatementTooComplex(), False),
    (pg_errors.DatabaseDropped(), False),
    (PoolClosed("the pool 'rec_warehouse' is already closed"), False),
    (ValueError("not a database error"), False),
    # Great Expectations' engine: psycopg2, bare or wrapped by SQLAlchemy.
    (psycopg2.OperationalError("could not connect to server: Connection refused"), True),
    (sa_exc.OperationalError("SELECT 1", {}, psycopg2.OperationalError(
        "server closed the connection unexpectedly")), True),
    (sa_exc.OperationalError("SELECT 1", {}, psycopg2.OperationalError(
        'connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication failed for '
        'user "rec"')), False),
    (DatabaseUnavailable("Great Expectations lost its database connection validating raw.reviews"), True),
    (LoginRefused("PostgreSQL refused the login of role 'rec'"), False),
    # dbt's CLI: only its messages tell.
    (DagsterDbtCliRuntimeError(description="dbt build failed: Database Error\n  connection to server at "
                               '"127.0.0.1", port 55432 failed: Connection refused'), True),
    (DagsterDbtCliRuntimeError(description="dbt build failed: Database Error\n  terminating connection due "
                               "to administrator command"), True),
    (DagsterDbtCliRuntimeError(description="dbt build failed: Compilation Error in model users"), False),
    (DagsterDbtCliRuntimeError(description='dbt build failed: FATAL:  password authentication failed for user '
                               '"rec"'), False),
    (RuntimeError("wrapper"), False),
])
def test_which_errors_count_as_transient(error, transient):
    assert is_transient_db_error(error) is transient


def test_backoff_doubles_per_retry_within_its_jitter():
    assert [backoff_seconds(n, 5.0, jitter=lambda: 0.5) for n in range(4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff_seconds(2, 5.0, jitter=lambda: 0.0) == 10.0
    assert backoff_seconds(2, 5.0, jitter=lambda: 0.999) < 30.0
    assert backoff_seconds(3, 0.0) == 0.0


def test_the_decorator_keeps_the_signature_dagster_reads_and_refuses_what_it_cannot_wrap():
    import inspect

    def compute(context: dg.AssetExecutionContext, config: ProbeConfig, warehouse: PostgresResource) -> int:
        return 1

    assert inspect.signature(retry_transient_db_errors()(compute)) == inspect.signature(compute)

    async def asynchronous(context):
        return 1

    with pytest.raises(TypeError, match="async"):
        retry_transient_db_errors()(asynchronous)
    with pytest.raises(TypeError, match="below @dg.asset"):
        retry_transient_db_errors()(returns_a_value)  # above @dg.asset: an AssetsDefinition, not a function
