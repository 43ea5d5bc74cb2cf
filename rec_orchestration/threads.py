"""The thread budget of a step: how many threads torch, BLAS and LightFM may use, decided in one place.

Torch, OpenBLAS/MKL and LightFM each start one thread per core by default. Two steps side by side on a
2-core machine then run four busy threads on two cores, and a thread that waits for a descheduled peer
makes an epoch several times slower (LightGCN on ml-100k: 0.68 s idle with 2 threads, 2.95 s with one
core busy; 1 thread: 0.70 s and 0.90 s). So a step takes its share of the cores:

    threads = cores this process may run on // steps that may run at once

``REC_STEP_THREADS`` overrides the result; ``OMP_NUM_THREADS``, when set (dask's worker nanny sets it to 1
for each worker process), is taken as the share already decided. Steps that may run at once follow
``REC_EXECUTOR``: one with ``in_process``, and with ``multiprocess`` as many as the refresh has steps side
by side where the step runs, at most one per core: the model steps' level is the widest
(:data:`PARALLEL_MODEL_STEPS`, the default); the scoring shards run by themselves, as many as there are
shards (``assets/scoring.py``), so one shard on a 2-core machine takes both cores.

No Dagster import: the model code and the benchmarks use it too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# The refresh's widest level: the five model steps (popularity, itemknn, ease, lightfm, lightgcn).
PARALLEL_MODEL_STEPS = 5


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container's cpuset also narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def steps_at_once(executor: str | None = None, width: int = PARALLEL_MODEL_STEPS) -> int:
    """How many steps of a run may compete for this machine's cores under ``executor`` (REC_EXECUTOR's) where
    ``width`` steps of the graph may run side by side."""
    if executor is None:
        from rec_orchestration.settings import executor_name

        executor = executor_name()
    if executor == "in_process":
        return 1
    return max(1, min(usable_cores(), width))


def step_threads(executor: str | None = None, width: int = PARALLEL_MODEL_STEPS) -> int:
    """Threads one step may use: REC_STEP_THREADS, else OMP_NUM_THREADS, else its share of the cores with
    ``width`` steps side by side (the model steps' level by default)."""
    for variable in ("REC_STEP_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if value:
            threads = int(value)
            if threads < 1:
                raise ValueError(f"{variable}={value}: expected at least 1")
            return threads
    return max(1, usable_cores() // steps_at_once(executor, width))


@contextmanager
def limited(threads: int | None = None) -> Iterator[int]:
    """Hold torch's intra-op threads, every BLAS/OpenMP pool (threadpoolctl) and numba's threads to
    ``threads`` (default :func:`step_threads`) inside the block; yields the number. LightFM takes the
    number as its ``num_threads`` (``ml.factorization``). Torch is imported here: every step that trains
    a model imports it anyway (the model store saves state dicts)."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = step_threads() if threads is None else threads
    torch_before = torch.get_num_threads()
    numba = sys.modules.get("numba")
    numba_before = numba.get_num_threads() if numba is not None else None
    try:
        torch.set_num_threads(threads)
        if numba is not None:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        with threadpool_limits(limits=threads):
            yield threads
    finally:
        torch.set_num_threads(torch_before)
        if numba is not None and numba_before is not None:
            numba.set_num_threads(numba_before)
