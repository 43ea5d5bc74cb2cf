"""dagster-dask's executor with one fix: the run's steps reach the workers intact under current dask.

dagster-dask 0.29.27 submits each step as ``client.submit(query_on_dask_worker, dependencies, recon_job,
dagster_run, run_config, step_keys, instance_ref, known_state)``. Since dask 2024.12, ``Client.submit`` walks
every tuple, list and dict among the arguments looking for futures, and Dagster's ``DagsterRun`` is a named
tuple: the walk reaches its ``run_op_concurrency``, a Dagster ``@record`` that refuses iteration, and every
run of a job with concurrency pools (ours: ``runs.REFRESH_POOL``) fails before its first step with
"Iteration is not allowed on `@record` RunOpConcurrency". Here the Dagster objects travel sealed in one plain
object dask passes through as it is (pickled to the worker like any argument); the futures of the step's
upstream steps stay a plain list, so dask still orders the steps. Everything else is dagster-dask's: its
config schema, its worker function, its resource tags.

Imported only with ``REC_EXECUTOR=dask`` (``jobs.run_executor``): it imports dask.distributed.
"""

from collections.abc import Iterator

import dagster as dg
import dask.distributed
from dagster_dask.executor import DaskExecutor, dask_executor, get_dask_resource_requirements, query_on_dask_worker


class _Sealed:
    """Arguments dask must not look into (it only walks tuples, lists, sets and dicts)."""

    __slots__ = ("arguments",)

    def __init__(self, arguments: tuple) -> None:
        self.arguments = arguments


def _run_step(dependencies: list, sealed: _Sealed):
    """On a worker: run one step as dagster-dask does; ``dependencies`` are the upstream steps' results."""
    return query_on_dask_worker(dependencies, *sealed.arguments)


class SealedDaskExecutor(DaskExecutor):
    """:class:`dagster_dask.executor.DaskExecutor` submitting each step's Dagster objects sealed."""

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        if not plan_context.instance.is_persistent:
            raise dg.DagsterInvariantViolationError("Dask execution requires a persistent DagsterInstance")
        job_name = plan_context.job_name
        with dask.distributed.Client(self._cluster(job_name)) as client:
            futures = {}
            for level in execution_plan.get_steps_to_execute_by_level():
                for step in level:
                    upstream = [futures[key] for step_input in step.step_inputs
                                for key in step_input.dependency_keys]
                    futures[step.key] = client.submit(
                        _run_step, upstream,
                        _Sealed((plan_context.reconstructable_job, plan_context.dagster_run, plan_context.run_config,
                                 [step.key], plan_context.instance.get_ref(), execution_plan.known_state)),
                        key=f"{job_name}.{step.key}", resources=get_dask_resource_requirements(step.tags))
            for _, events in dask.distributed.as_completed(list(futures.values()), with_results=True):
                yield from events

    def _cluster(self, job_name: str):
        """The scheduler address of an ``existing`` cluster, else the cluster dagster-dask's config names."""
        if self.cluster_type == "existing":
            return self.cluster_configuration["address"]
        if self.cluster_type == "local":
            return dask.distributed.LocalCluster(**self.build_dict(job_name))
        raise dg.DagsterInvariantViolationError(
            f"dask cluster type {self.cluster_type!r}: this project runs on an existing scheduler "
            "(REC_DASK_SCHEDULER) or a local cluster; start other clusters yourself and give their scheduler")


def sealed_dask_executor(default_cluster: dict) -> dg.ExecutorDefinition:
    """dagster-dask's ``dask`` executor (its name and config schema) running :class:`SealedDaskExecutor`,
    with ``default_cluster`` as the cluster of a run whose config names none."""

    def create(init_context) -> SealedDaskExecutor:
        ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
        return SealedDaskExecutor(cluster_type, cluster_configuration)

    return dg.ExecutorDefinition(
        name=dask_executor.name, description=dask_executor.description,
        config_schema=dg.Field(dask_executor.config_schema.config_type, default_value={"cluster": default_cluster}),
        executor_creation_fn=create, requirements=dask_executor.get_requirements)
