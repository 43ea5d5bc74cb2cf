"""Kubernetes resources of each step, as the ``dagster-k8s/config`` op tag (``REC_EXECUTOR=k8s``).

With dagster-k8s's ``k8s_job_executor`` every step is a Kubernetes Job of its own, and the executor reads
the step's ``dagster-k8s/config`` tag (``dagster_k8s/executor.py``: ``K8sStepHandler._get_container_context``
passes the step's tags to ``dagster_k8s/job.py``: ``get_user_defined_k8s_config``, which ``json.loads``
the value and validates it against ``USER_DEFINED_K8S_JOB_CONFIG_SCHEMA``: ``container_config``,
``pod_spec_config``, ``pod_template_spec_metadata``, ``job_config``, ``job_metadata``, ``job_spec_config``,
``merge_behavior``). An op tag given as a dict is stored as its JSON string (Dagster's ``normalize_tags``),
so :func:`k8s_step_tags` returns a plain dict, used as an asset's ``op_tags``. Checked against
dagster-k8s 0.29.27.

The tag's keys are Kubernetes' own fields in snake case (``construct_dagster_k8s_job`` pops
``container_config["resources"]`` and ``["image"]`` by those names):

* ``container_config.resources.requests`` / ``.limits``: what the scheduler reserves for the step's pod
  and where the kernel stops it (the memory limit is the one an out-of-memory step dies at);
* ``container_config.env``: ``REC_STEP_THREADS``, the step's CPU limit, because torch, BLAS, numba and
  LightFM count the node's cores, not the pod's quota (:mod:`rec_orchestration.threads`);
* for the GPU profile, ``nvidia.com/gpu: 1`` in the limits (an extended resource: Kubernetes takes the
  request equal to the limit), and ``pod_spec_config`` with a node selector and a toleration for the
  GPU nodes' taint.

Every other executor (``multiprocess``, ``in_process``, ``dask``) ignores the tag, so the same definitions
run anywhere. Nothing here imports dagster-k8s: the tag is plain data, importable without the ``k8s``
extra. The numbers are first sizes from the sample data and the benchmarks' orders of magnitude; a
cluster can override any step without a code change through the executor's ``per_step_k8s_config`` run
config (keyed by op name), which dagster-k8s merges over the tag.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"
# The image of the GPU step when it is set (the Dockerfile's TORCH_VARIANT=cuda build of the same commit);
# else the step runs in the run's image, whose CPU torch leaves the GPU unused (see docs/deployment.md).
GPU_IMAGE_VARIABLE = "REC_K8S_GPU_IMAGE"
# The label NVIDIA's GPU feature discovery (GPU operator) puts on GPU nodes, and the taint GPU node pools
# usually carry so that nothing else lands there. A cluster labelled otherwise overrides them through
# per_step_k8s_config (see the module's docstring).
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


@dataclass(frozen=True)
class StepProfile:
    """Requests and limits (Kubernetes quantities) of one kind of step."""

    description: str
    requests: dict[str, str]
    limits: dict[str, str]
    gpu: bool = False
    extra_limits: dict[str, str] = field(default_factory=dict)


PROFILES: dict[str, StepProfile] = {
    # The work happens in PostgreSQL; the step's process sends SQL, moves a few result frames, or runs
    # dbt's client (rec-dbt, one dbt process with REC_DBT_THREADS connections).
    "light": StepProfile(
        "SQL in PostgreSQL, dbt's client, evaluation bookkeeping, the popularity rankings",
        requests={"cpu": "250m", "memory": "1Gi"}, limits={"cpu": "1", "memory": "2Gi"}),
    # Parses landing files (orjson, pyarrow), COPYs them into raw, runs the Great Expectations suites.
    "ingestion": StepProfile(
        "landing files parsed and loaded into raw, then validated",
        requests={"cpu": "1", "memory": "2Gi"}, limits={"cpu": "2", "memory": "4Gi"}),
    # Sparse cosine top-n in blocks (numba, BLAS), TF-IDF over product text, embedding neighbours.
    "similarity": StepProfile(
        "item-item similarity: collaborative, content and embedding",
        requests={"cpu": "2", "memory": "4Gi"}, limits={"cpu": "4", "memory": "8Gi"}),
    # The CPU models (popularity, itemknn, ease, lightfm) and the champion's refit on every interaction.
    "training": StepProfile(
        "model fit and evaluation on CPU",
        requests={"cpu": "2", "memory": "4Gi"}, limits={"cpu": "4", "memory": "8Gi"}),
    # The champion's top-k for every user (or one shard of them), and the publication of the tables.
    "scoring": StepProfile(
        "the champion's recommendations for every user, then the published tables",
        requests={"cpu": "2", "memory": "4Gi"}, limits={"cpu": "4", "memory": "8Gi"}),
    # LightGCN: the one step that asks for a GPU.
    "gpu_training": StepProfile(
        "LightGCN fit on one GPU",
        requests={"cpu": "2", "memory": "8Gi"}, limits={"cpu": "4", "memory": "16Gi"},
        gpu=True, extra_limits={GPU_RESOURCE: "1"}),
}

_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity (``"250m"``, ``"2"``, ``"1.5"``) in cores."""
    match = _CPU.match(quantity.strip())
    if not match:
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) else value


_MEMORY_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|)$")


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``"512Mi"``, ``"4Gi"``, ``"1G"``, ``"1000"``) in bytes."""
    match = _MEMORY.match(quantity.strip())
    if not match:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])


def step_threads(profile: str) -> int:
    """Threads a step of ``profile`` should use: its CPU limit, whole cores, at least one."""
    return max(1, math.floor(cpu_cores(_profile(profile).limits["cpu"])))


def _profile(name: str) -> StepProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown step profile {name!r}; known: {', '.join(PROFILES)}") from None


def k8s_step_config(profile: str) -> dict[str, Any]:
    """The value of the ``dagster-k8s/config`` tag for a step of ``profile`` (a fresh dict each call)."""
    spec = _profile(profile)
    container: dict[str, Any] = {
        "resources": {"requests": dict(spec.requests), "limits": {**spec.limits, **spec.extra_limits}},
        "env": [{"name": "REC_STEP_THREADS", "value": str(step_threads(profile))}],
    }
    config: dict[str, Any] = {"container_config": container}
    if spec.gpu:
        image = os.environ.get(GPU_IMAGE_VARIABLE, "").strip()
        if image:
            container["image"] = image
        config["pod_spec_config"] = {"node_selector": dict(GPU_NODE_SELECTOR),
                                     "tolerations": copy.deepcopy(GPU_TOLERATIONS)}
    return config


def k8s_step_tags(profile: str) -> dict[str, Any]:
    """Op tags of a step of ``profile``: ``{"dagster-k8s/config": ...}``, for an asset's ``op_tags``."""
    return {K8S_CONFIG_TAG: k8s_step_config(profile)}


def model_profile(model_name: str) -> str:
    """The profile of the ``models/<model_name>`` step: LightGCN on a GPU, the others on CPU."""
    return "gpu_training" if model_name == "lightgcn" else "training"
