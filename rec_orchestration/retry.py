"""Retrying steps that failed for a reason that goes away by itself: the database restarting, a dropped
connection, a full connection pool, a deadlock or serialization failure, a lock or statement timeout.

``@retry_transient_db_errors()`` goes between ``@dg.asset`` (or ``@dg.multi_asset``, ``@dg.op``) and the
compute function. It turns such an error into ``dagster.RetryRequested``, so Dagster runs the step again
after an exponential backoff; every other exception (a missing table, a constraint violation, bad data,
``dagster.Failure``) fails the step at once, as before: retrying would only repeat it.

How the wait behaves: ``RetryRequested.seconds_to_wait`` is honoured by the in-process executor
(``dg.materialize``, ``execute_in_process``) as by the multiprocess one: both schedule steps through
Dagster's ``ActiveExecution``. The step is parked as up for retry, steps that do not depend on it keep
running, and when nothing else can run the run process sleeps until the step is due
(``ActiveExecution.sleep_til_ready``). The retry happens inside the same
run, with the same resource instances (the warehouse's connection pool is not rebuilt). A step runs
``max_retries + 1`` times at most; then it fails ("Exceeded max_retries", caused by the original error),
the run fails, and the run retry of ``dagster.yaml`` (a new run, from the failed steps) may follow.

A generator (a multi-asset yielding ``MaterializeResult``) is retried as a whole: results it yielded
before the error stay in the event log of the failed attempt and are yielded again by the retry.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg
import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolClosed

from rec_orchestration.db.failures import DatabaseUnavailable, LoginRefused, connection_lost_in, refused_login_in

F = TypeVar("F", bound=Callable[..., Any])

# psycopg puts most server errors whose SQLSTATE is "operational" under OperationalError, and the pool's
# PoolTimeout and TooManyRequests derive from it too. Some of those are not transient: waiting does not
# change a wrong password, a plpgsql bug, a program limit or a dropped database. They fail at once.
# A refused login at connect time carries no SQLSTATE in psycopg: it is recognised by its message
# (``db.failures.refused_login_in``) and fails at once too.
NOT_TRANSIENT_SQLSTATE_CLASSES = frozenset({
    "28",  # invalid authorization specification
    "2F", "38", "39",  # SQL / external routine exceptions (bugs in functions)
    "3B",  # savepoint exception
    "54",  # program limit exceeded: statement too complex, too many columns or arguments
    "F0",  # configuration file error
})
NOT_TRANSIENT_SQLSTATES = frozenset({
    pg_errors.ObjectNotInPrerequisiteState.sqlstate,  # 55000
    pg_errors.CantChangeRuntimeParam.sqlstate,  # 55P02
    pg_errors.UnsafeNewEnumValueUsage.sqlstate,  # 55P04
    pg_errors.DatabaseDropped.sqlstate,  # 57P04
    pg_errors.UndefinedFile.sqlstate, pg_errors.DuplicateFile.sqlstate, pg_errors.FileNameTooLong.sqlstate,
})


def _sqlstate_is_transient(sqlstate: str) -> bool:
    return sqlstate[:2] not in NOT_TRANSIENT_SQLSTATE_CLASSES and sqlstate not in NOT_TRANSIENT_SQLSTATES


def _wrapped(error: BaseException) -> list[BaseException]:
    """``error`` and what it explicitly wraps: SQLAlchemy's ``.orig`` (the driver's error) and ``raise ...
    from`` causes. (Not ``__context__``: an error raised while handling another is not that error.)"""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return chain


def is_transient_db_error(error: BaseException) -> bool:
    """Whether running the same step again later may succeed.

    - psycopg (3): an ``OperationalError`` (which includes the pool's ``PoolTimeout``) other than the
      deterministic SQLSTATEs above, a refused login or a closed pool;
    - psycopg2 (Great Expectations' SQLAlchemy engine), also when SQLAlchemy wraps it: the same rule on
      its ``pgcode``, or on its text when it has none;
    - :class:`~rec_orchestration.db.failures.DatabaseUnavailable` (a tool lost its connection);
    - dbt's CLI failing (dagster-dbt's ``DagsterDbtCliRuntimeError``, which carries dbt's messages) on a
      lost or refused connection.
    Anything else (a Dagster ``Failure``, bad data, a missing table, a refused login) is not.
    """
    for wrapped in _wrapped(error):
        if isinstance(wrapped, (PoolClosed, LoginRefused)):
            return False
        if isinstance(wrapped, DatabaseUnavailable):
            return True
        if isinstance(wrapped, psycopg.OperationalError):
            if wrapped.sqlstate is None:  # raised by the client: connection failed or lost, pool or connect timeout
                return refused_login_in(str(wrapped)) is None
            return _sqlstate_is_transient(wrapped.sqlstate)
        if _is_psycopg2_error(wrapped, "OperationalError", "InterfaceError"):
            pgcode = getattr(wrapped, "pgcode", None)
            if pgcode is None:
                return connection_lost_in(str(wrapped))
            return _sqlstate_is_transient(pgcode)
        if type(wrapped).__name__ == "DagsterDbtCliRuntimeError":
            return connection_lost_in(str(wrapped))
    return False


def _is_psycopg2_error(error: BaseException, *names: str) -> bool:
    """Whether ``error`` is one of psycopg2's ``names`` (without importing psycopg2 where it is absent)."""
    return any(klass.__name__ in names and klass.__module__.startswith("psycopg2") for klass in type(error).__mro__)


def backoff_seconds(retry_number: int, base_delay_s: float, jitter: Callable[[], float] = random.random) -> float:
    """``base_delay_s * 2 ** retry_number`` scaled by a random factor in [0.5, 1.5): 5, 10, 20 s on average
    for the first three retries with the default base. The jitter keeps steps that failed together (every
    step of a run, when the server restarted) from hitting the database again in the same second."""
    return base_delay_s * 2 ** retry_number * (0.5 + jitter())


def retry_transient_db_errors(max_retries: int = 3, base_delay_s: float = 5.0) -> Callable[[F], F]:
    """Decorator for a Dagster compute function: transient database errors become
    ``dagster.RetryRequested(max_retries, seconds_to_wait=backoff)``, chained from the error and logged
    as a warning; anything else propagates unchanged. Apply it below ``@dg.asset`` / ``@dg.op``::

        @dg.asset
        @retry_transient_db_errors()
        def popular_products(context: dg.AssetExecutionContext, warehouse: PostgresResource): ...

    The signature is kept (``functools.wraps``), so Dagster sees the same context, config, resource
    and input parameters. Generator functions stay generator functions (Dagster tells them apart).
    """
    if max_retries < 0 or base_delay_s < 0:
        raise ValueError("max_retries and base_delay_s must not be negative")

    def decorate(fn: F) -> F:
        if not inspect.isfunction(fn):  # e.g. an AssetsDefinition: the decorator went above @dg.asset
            raise TypeError(f"retry_transient_db_errors wraps a compute function; put it below @dg.asset / @dg.op, "
                            f"not on {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(f"{fn.__name__}: retry_transient_db_errors does not support async functions")

        def retry_request(error: Exception, args: tuple) -> dg.RetryRequested:
            context = _execution_context(args)
            retry_number = context.retry_number if context is not None else 0
            delay = backoff_seconds(retry_number, base_delay_s)
            log = context.log if context is not None else dg.get_dagster_logger()
            what = f"{fn.__name__}: transient database error ({type(error).__name__}: {str(error).strip()})"
            if retry_number < max_retries:
                log.warning(f"{what}; retry {retry_number + 1} of {max_retries} in {delay:.1f} s")
            else:
                log.warning(f"{what}; no retries left ({max_retries} done)")
            return dg.RetryRequested(max_retries=max_retries, seconds_to_wait=delay)

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return (yield from fn(*args, **kwargs))
                except Exception as error:
                    if not is_transient_db_error(error):
                        raise
                    raise retry_request(error, args) from error

            return generator_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as error:
                if not is_transient_db_error(error):
                    raise
                raise retry_request(error, args) from error

        return wrapper  # type: ignore[return-value]

    return decorate


def _execution_context(
    args: tuple,
) -> dg.OpExecutionContext | dg.AssetExecutionContext | dg.AssetCheckExecutionContext | None:
    """The step's context: the one passed in (Dagster passes it first, positionally), else the one in
    scope while Dagster executes a step (for compute functions that take no context), else None."""
    if args and isinstance(args[0], (dg.OpExecutionContext, dg.AssetExecutionContext,
                                     dg.AssetCheckExecutionContext)):
        return args[0]
    try:
        return dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return None
