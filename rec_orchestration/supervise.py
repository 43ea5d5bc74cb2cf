"""Run a long-lived command (``dagster dev``) so that stopping it stops every process it started.

``rec dev`` used to ``exec`` ``dagster dev``. Started in the background by a non-interactive shell
(``make dev &`` in a script, a CI step), a process inherits SIGINT *ignored*; Python then installs no
KeyboardInterrupt handler, and Dagster maps SIGTERM onto that same ignored disposition. So
``dagster dev``, and its code server and gRPC server after it (ignored signals survive ``exec``),
ignored both SIGTERM and SIGINT; only SIGKILL ended them, and that left the webserver and daemon behind.

:func:`run_supervised` keeps the calling process as the parent instead:

* the child gets the default SIGINT/SIGTERM/SIGHUP dispositions (handlers of our own are installed
  before it starts, and ``exec`` resets caught signals to the default), so Dagster's own orderly
  shutdown works again in every process of the tree;
* the child starts a session of its own (``setsid``): a terminal's Ctrl-C reaches only this process,
  which passes one SIGINT to the child (Dagster then stops its webserver, daemon and code servers
  itself), and everything the child starts stays in that session;
* when the child has exited, or ``grace_s`` after the request, whatever is left in the session gets
  SIGTERM, then SIGKILL; a second signal kills the session at once;
* on Linux the child is sent SIGTERM if this process dies first (``PR_SET_PDEATHSIG``), even by SIGKILL.

Processes that leave the session on purpose (``setsid``: a PostgreSQL server started by ``pg_ctl``) are
daemons meant to outlive the command and are not touched.

Standard library only: no Dagster import.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFAULT_GRACE_S = 30.0
STRAGGLER_GRACE_S = 5.0  # after the child itself is gone, what is left of its session gets this long
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_S = 0.2


def session_members(sid: int) -> list[int] | None:
    """Live (not zombie) processes of session ``sid``; ``None`` where ``/proc`` cannot tell."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _signal_session(sid: int, sig: int) -> None:
    """Send ``sig`` to every process of the session (and its first process group, where /proc is missing)."""
    members = session_members(sid)
    if members is None:
        try:
            os.killpg(sid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        return
    for pid in members:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _session_alive(sid: int) -> bool:
    members = session_members(sid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(sid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_session_gone(sid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _session_alive(sid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def _child_setup(parent: int, prctl: Callable[..., int] | None) -> None:
    """In the child, before ``exec``: SIGTERM it when ``parent`` dies (Linux)."""
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect: do not start
            raise ChildProcessError("the supervising process is gone")


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it


def run_supervised(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                   grace_s: float = DEFAULT_GRACE_S, stop_signal: int = signal.SIGINT,
                   say: Callable[[str], None] = lambda message: print(message, file=sys.stderr)) -> int:
    """Run ``argv`` in a session of its own until it exits or this process is asked to stop.

    SIGINT, SIGTERM and SIGHUP sent to this process become one ``stop_signal`` to the child; when the child
    has exited, or ``grace_s`` later, what is left of its session is ended (SIGTERM, then SIGKILL). Returns
    the child's exit status, 0 when it stopped as asked, 1 when it had to be killed.
    """
    requests: list[int] = []

    def tell(message: str) -> None:
        try:
            say(message)
        except OSError:  # the terminal went away (SIGHUP): stopping matters more than saying so
            pass

    def on_signal(signo: int, _frame: object) -> None:
        requests.append(signo)

    previous = {sig: signal.signal(sig, on_signal) for sig in SHUTDOWN_SIGNALS}
    try:
        parent, prctl = os.getpid(), _libc_prctl()
        child = subprocess.Popen(list(argv), env=dict(env) if env is not None else None, cwd=cwd,
                                 start_new_session=True, preexec_fn=lambda: _child_setup(parent, prctl))
        sid = child.pid
        handled = 0
        deadline: float | None = None
        killed = False
        while child.poll() is None:
            if len(requests) > handled:
                if handled == 0:
                    name = signal.Signals(requests[0]).name
                    tell(f"{name} received: stopping {Path(argv[0]).name} and everything it started "
                        f"(up to {grace_s:.0f} s; signal again to kill at once)")
                    _send(child, stop_signal)
                    deadline = time.monotonic() + grace_s
                else:
                    tell("second signal: killing at once")
                    deadline = time.monotonic()
                handled = len(requests)
            if deadline is not None and time.monotonic() >= deadline and not killed:
                if len(requests) < 2:
                    tell(f"still running after {grace_s:.0f} s: killing what is left")
                _signal_session(sid, signal.SIGKILL)
                _send(child, signal.SIGKILL)
                killed = True
            try:
                child.wait(timeout=_POLL_S)
            except subprocess.TimeoutExpired:
                pass
        # The child is gone; end whatever it left behind in its session. Dagster's code server may still
        # be finishing its own shutdown: it gets a moment before SIGTERM, then SIGKILL.
        if not _wait_session_gone(sid, 0 if killed else STRAGGLER_GRACE_S):
            _signal_session(sid, signal.SIGTERM)
            if not _wait_session_gone(sid, STRAGGLER_GRACE_S):
                tell("processes left behind did not stop on SIGTERM: killing them")
                _signal_session(sid, signal.SIGKILL)
                _wait_session_gone(sid, STRAGGLER_GRACE_S)
        if killed:
            return 1
        return 0 if requests else (child.returncode if child.returncode >= 0 else 128 - child.returncode)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _send(child: subprocess.Popen, sig: int) -> None:
    try:
        child.send_signal(sig)
    except ProcessLookupError:
        pass
