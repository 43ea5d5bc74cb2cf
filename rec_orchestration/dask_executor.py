"""The ``dask`` executor: each step of a run is a task on a dask.distributed cluster, with Dagster's semantics.

Why not dagster-dask's own executor (0.29.27): it hands each step to a worker as a plan of that one step,
so a step whose upstream step failed still runs (a failed blocking check or dbt build would not stop the
models and the publish), retries are off, and a terminated run keeps going. It also fails every run of a
job with concurrency pools under dask >= 2024.12 (``Client.submit`` walks the ``DagsterRun`` it is given).

So the run's process orchestrates as Dagster's Kubernetes and Docker executors do: Dagster's step-delegating
executor decides which steps may start (upstream succeeded, blocking checks passed), retries, skips and
terminates, reading the steps' events from the run storage, and :class:`DaskStepHandler` runs each step it
launches as ``dagster api execute_step`` in a process of its own, as a task on a worker of the cluster. A
worker is any machine with the project installed and its environment (``REC_DATABASE_URL``, the Dagster
storage, ``REC_MODEL_STORE_DIR``); the task's key carries the run id, so concurrent runs never share a task.

The config keeps dagster-dask's ``cluster`` (``existing: {address}`` or ``local: {...}`` LocalCluster
arguments), plus Dagster's ``retries`` and ``max_concurrent``. Dagster offers executors no public API, so
this module imports from ``dagster._core`` as dagster-k8s and dagster-docker do.

Imported only with ``REC_EXECUTOR=dask`` (``jobs.run_executor``): it imports dask.distributed.
"""

import atexit
import subprocess
import sys
from collections.abc import Iterator

import dagster as dg
import dask.distributed
from dagster._core.events import DagsterEvent, EngineEventData  # noqa: PLC2701 - see the module docstring
from dagster._core.execution.retries import RetryMode, get_retries_config  # noqa: PLC2701
from dagster._core.executor.step_delegating import (  # noqa: PLC2701
    CheckStepHealthResult,
    StepDelegatingExecutor,
    StepHandler,
    StepHandlerContext,
)
from dagster_dask.executor import dask_executor, get_dask_resource_requirements

STOP_POLL_SECONDS = 1.0


def run_step_process(command: list[str], stop_event: str) -> int:
    """On a worker: ``python -m dagster <command>`` (``api execute_step ...``) in a process of its own, with
    the worker's environment; stopped (SIGTERM) when the run sets ``stop_event``. Returns its exit code."""
    process = subprocess.Popen([sys.executable, "-m", "dagster", *command])
    stop = dask.distributed.Event(stop_event)
    try:
        while True:
            try:
                return process.wait(timeout=STOP_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    process.terminate()
                    return process.wait()
    finally:
        if process.poll() is None:
            process.kill()


class DaskStepHandler(StepHandler):
    """Launches a step as a task on the cluster, checks the task, stops it."""

    def __init__(self, cluster_type: str, cluster_configuration: dict) -> None:
        if cluster_type not in ("existing", "local"):
            raise dg.DagsterInvariantViolationError(
                f"dask cluster type {cluster_type!r}: this project runs on an existing scheduler "
                "(REC_DASK_SCHEDULER) or a local cluster; start other clusters yourself and give their scheduler")
        self._cluster_type, self._configuration = cluster_type, dict(cluster_configuration)
        self._client: dask.distributed.Client | None = None
        self._futures: dict[str, dask.distributed.Future] = {}

    @property
    def name(self) -> str:
        return "DaskStepHandler"

    def _connect(self) -> dask.distributed.Client:
        if self._client is None:
            if self._cluster_type == "existing":
                self._client = dask.distributed.Client(self._configuration["address"])
            else:
                cluster = dask.distributed.LocalCluster(**self._configuration)
                self._client = dask.distributed.Client(cluster)
                atexit.register(cluster.close)
            atexit.register(self._client.close)
        return self._client

    @staticmethod
    def _key(context: StepHandlerContext) -> tuple[str, str]:
        (step_key,) = context.execute_step_args.step_keys_to_execute
        known = context.execute_step_args.known_state
        attempt = known.get_retry_state().get_attempt_count(step_key) if known else 0
        return step_key, f"{context.execute_step_args.run_id}-{step_key}-{attempt}"

    def launch_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        step_key, task = self._key(step_handler_context)
        arguments = list(step_handler_context.execute_step_args.get_command_args())
        command = arguments[arguments.index("api"):]  # the worker's own python runs it
        client = self._connect()
        self._futures[task] = client.submit(
            run_step_process, command, f"stop-{task}", key=task, pure=False,
            resources=get_dask_resource_requirements(step_handler_context.step_tags[step_key]))
        yield DagsterEvent.step_worker_starting(
            step_handler_context.get_step_context(step_key),
            message=f'Executing step "{step_key}" as dask task {task} on {client.scheduler.address}.',
            metadata={"dask task": dg.MetadataValue.text(task)})

    def check_step_health(self, step_handler_context: StepHandlerContext) -> CheckStepHealthResult:
        step_key, task = self._key(step_handler_context)
        future = self._futures.get(task)
        if future is None:
            return CheckStepHealthResult.unhealthy(f"no dask task {task} for step {step_key} in this run's process")
        if future.status in ("error", "cancelled", "lost"):
            error = future.exception() if future.status == "error" else None
            return CheckStepHealthResult.unhealthy(f"dask task {task} for step {step_key} {future.status}: {error}")
        if future.status == "finished" and (code := future.result()) != 0:
            return CheckStepHealthResult.unhealthy(f"the process of step {step_key} exited with {code}")
        return CheckStepHealthResult.healthy()

    def terminate_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        step_key, task = self._key(step_handler_context)
        yield DagsterEvent.engine_event(step_handler_context.get_step_context(step_key),
                                        message=f"Stopping dask task {task} of step {step_key}",
                                        event_specific_data=EngineEventData())
        if task in self._futures:
            dask.distributed.Event(f"stop-{task}", client=self._connect()).set()
            self._futures[task].cancel()


def dask_step_executor(default_cluster: dict) -> dg.ExecutorDefinition:
    """The ``dask`` executor, ``default_cluster`` the cluster of a run whose config names none."""
    cluster_field = dask_executor.config_schema.config_type.fields["cluster"]

    def create(init_context) -> StepDelegatingExecutor:
        config = init_context.executor_config
        ((cluster_type, cluster_configuration),) = config["cluster"].items()
        return StepDelegatingExecutor(DaskStepHandler(cluster_type, cluster_configuration),
                                      retries=RetryMode.from_config(config["retries"]),
                                      max_concurrent=config.get("max_concurrent"))

    return dg.ExecutorDefinition(
        name="dask", description=__doc__.split("\n\n")[0],
        config_schema={
            "cluster": dg.Field(cluster_field.config_type, default_value=default_cluster,
                                description="dagster-dask's: an existing scheduler, or a local cluster."),
            "retries": get_retries_config(),
            "max_concurrent": dg.Field(int, is_required=False, description="Most steps running at once."),
        },
        executor_creation_fn=create, requirements=dask_executor.get_requirements)
