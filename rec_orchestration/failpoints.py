"""Failpoints: named places where a fault test can kill the process outright, to prove that a crash there
leaves the data consistent and that the next run converges.

``REC_FAILPOINT=<name>`` makes the process ``SIGKILL`` itself when it reaches ``failpoint(<name>)``: no
``finally`` block, no ``atexit``, no flush runs, exactly as with ``kill -9`` or the OOM killer. Unset (as in
any deployment) a failpoint costs one environment lookup. ``bench/faults.py`` and the fault tests use them;
the places are listed in ``FAILPOINTS``.

No Dagster here: the model store and the training code call it.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "REC_FAILPOINT"

FAILPOINTS = {
    "lightgcn.epoch_end": "LightGCN training, after its first epoch",
    "model_store.before_manifest": "saving a model artifact: its weights written, its manifest not yet",
    "evaluation.before_record": "evaluation: every model scored, nothing recorded in ml.* yet",
}


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL when ``REC_FAILPOINT`` names ``name``; otherwise do nothing."""
    if os.environ.get(VARIABLE) == name:
        if name not in FAILPOINTS:
            raise ValueError(f"unknown failpoint {name!r}")
        os.kill(os.getpid(), signal.SIGKILL)
