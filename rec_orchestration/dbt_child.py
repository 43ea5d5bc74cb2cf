"""``rec-dbt``: dbt, run as a child that cannot outlive the step that started it.

dagster-dbt runs ``dbt build`` as a subprocess of the step. When the step's process is killed outright
(``kill -9``, the OOM killer, a node lost), nothing tells that child: it used to run on, orphaned, beside
the next run's build, which no longer waited for it because the build lock (a session advisory lock held
by the step) died with the step. The console script ``rec-dbt`` closes that gap on Linux:

1. it asks the kernel to SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)``; the request
   survives ``exec``);
2. it checks that the parent named in ``REC_DBT_PARENT_PID`` is still its parent — if the step died before
   step 1, nobody else would notice — and exits otherwise;
3. it replaces itself with the real dbt (``os.execv``): same process, same arguments, same environment.

dbt's own database sessions end with it: PostgreSQL rolls back the open transaction of a client that is
gone, and ``client_connection_check_interval`` (set for dbt's sessions by the warehouse asset) lets the
server notice mid-statement instead of at the statement's end. On other systems steps 1–2 are skipped.

No Dagster import here: the wrapper must start in milliseconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

PARENT_PID_VARIABLE = "REC_DBT_PARENT_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def dbt_executable() -> str:
    """The dbt installed beside this interpreter (works without an activated virtualenv)."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def wrapper_executable() -> str:
    """``rec-dbt`` beside this interpreter, else on PATH; the plain dbt where neither is installed."""
    beside = Path(sys.executable).parent / "rec-dbt"
    if beside.exists():
        return str(beside)
    return shutil.which("rec-dbt") or dbt_executable()


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux). False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0


def main() -> None:
    bound = die_with_parent()
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if bound and expected and os.getppid() != int(expected):
        print(f"rec-dbt: the step that started dbt (pid {expected}) is gone; not starting dbt", file=sys.stderr)
        sys.exit(3)
    dbt = dbt_executable()
    os.execv(dbt, [dbt, *sys.argv[1:]])


if __name__ == "__main__":
    main()
