"""Step start-up: the import of the definitions, and a refresh with every model reused over its steps' work.

Every process that loads the code location imports ``rec_orchestration.definitions``: the webserver, the
daemon, the run, and under the multiprocess executor (the default, what a schedule or the UI launches)
every step again in a process of its own. A refresh whose inputs did not change (every model artifact
reused) is then mostly that overhead.

Method, in a throw-away ``REC_HOME`` (its own embedded PostgreSQL on a free port):
1. the import time of the definitions in a fresh interpreter, median of ``--imports`` (not the first,
   which warms the file cache);
2. a generated sample (``--users`` users) landed and materialized once in process with few training
   epochs (not timed: it fits the models);
3. the same refresh again with ``rec materialize --executor multiprocess``: nothing changed, so ingestion
   skips its files, dbt finds nothing new and every model artifact is reused. Timed: its wall time, and
   from Dagster's event log the sum over its steps of STEP_START to STEP_SUCCESS (the steps' own work,
   their process start and imports excluded), and the run's span from RUN_START to RUN_SUCCESS.

Last line: ``import_s=<x> refresh_reused_s=<wall> step_work_s=<sum> overhead_ratio=<wall/sum>``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import argument_parser, latest_run_events, machine, say, step_seconds, throwaway_environment

QUICK = {"ops": {"models__lightgcn": {"config": {"epochs": 20, "patience": 3}},
                 "models__lightfm": {"config": {"epochs": 5}}}}


def rec(env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rec_orchestration.cli", *args], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"rec {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def import_seconds(env: dict[str, str], repeats: int) -> float:
    script = ("import time; t = time.perf_counter(); import rec_orchestration.definitions; "
              "print(time.perf_counter() - t)")
    times = []
    for _ in range(repeats + 1):
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(times[1:])


def last_run_timings(env: dict[str, str]) -> tuple[dict[str, float], float]:
    """(each step's work, the run's start to success span) of the last run, from the event log."""
    events = latest_run_events(env)
    run = {kind.split("_")[1]: at for kind, _, at in events if kind.startswith(("RUN_", "PIPELINE_"))}
    return step_seconds(events), run["SUCCESS"] - run["START"]


def main() -> None:
    parser = argument_parser("bench.refresh_overhead", __doc__)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--imports", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the throw-away REC_HOME")
    args = parser.parse_args()
    say(machine())
    home = Path(tempfile.mkdtemp(prefix="refresh_overhead_"))
    env, _ = throwaway_environment(home)
    try:
        imports = import_seconds(env, args.imports)
        say(f"import of the definitions: {imports:.2f} s (median of {args.imports})")
        rec(env, "sample", "--users", str(args.users), "--products", str(max(args.users // 3, 40)),
            "--landing-dir", env["REC_LANDING_DIR"])
        config = home / "quick.yaml"
        config.write_text(json.dumps(QUICK))
        first = rec(env, "materialize", "--executor", "in_process", "--config", str(config))
        say(f"first refresh (fits the models, not timed): {first:.0f} s")
        wall = rec(env, "materialize", "--executor", "multiprocess", "--config", str(config))
        steps, span = last_run_timings(env)
        work = sum(steps.values())
        print("step work: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in
                                        sorted(steps.items(), key=lambda pair: -pair[1])))
        print(f"definitions import: {imports:.2f} s")
        print(f"refresh with every model reused, multiprocess executor: {wall:.1f} s wall "
              f"(run span {span:.1f} s), {len(steps)} steps doing {work:.1f} s of work")
        print(f"import_s={imports:.2f} refresh_reused_s={wall:.1f} step_work_s={work:.1f} "
              f"overhead_ratio={wall / work:.1f}")
    finally:
        subprocess.run([sys.executable, "-m", "rec_orchestration.cli", "db", "stop"], env=env, capture_output=True)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
