"""The whole hourly refresh at scale: the real ``refresh_recommendations`` job on generated data of each size.

For each ``--sizes`` (default 1M and 10M reviews), in a throw-away ``REC_HOME`` with its own embedded
PostgreSQL:
1. a generated Amazon-Reviews-2023 reviews file (``bench.common``'s generator, users = reviews / 10,
   products = reviews / 50, power-law activity and popularity, 85 % of reviews following their user's
   taste for a few sub-categories) and its ``meta_*`` file (those sub-categories) are landed;
2. the full refresh: ``rec materialize --executor multiprocess`` (what a schedule launches: the default
   config, a process per step) over both files;
3. 1 % more reviews land (same users and products, a new file) and the refresh runs again: the hourly
   refresh after a delivery.

Per refresh and step: wall time (Dagster's STEP_START to STEP_SUCCESS), the peak resident memory of the
step's process (its /proc sampled every 0.5 s), and the row counts of the tables each stage writes. From
the smallest to the largest size, each step's growth exponent ``log(t_large / t_small) / log(size ratio)``.
The models' nDCG@10 on the time holdout (``ml.model_evaluations``) after each refresh: the second one's
warm-started models beside the first one's cold fits.

Last line (the largest size): ``refresh_<size>_s=<x> worst_stage_exponent=<y> peak_rss_gb=<z>
incremental_vs_full_<size>=<r>``. Goals (issue 13): full refresh at 10M <= 60 min, peak RSS <= 12 GB,
exponent <= 1.15, incremental <= 0.15 x full.

    .venv/bin/python -m bench.pipeline_scale [--sizes 1000000,10000000] [--keep] [--resume-dir DIR]

With ``--resume-dir``, a run stopped part way (the full refresh at 10M takes hours on 2 cores) goes on from
the last finished phase of each size when started again with the same directory: generated data, the
full refresh, the refresh after 1 %. Each phase records the machine it ran on and the commit of the code
(``+dirty`` when it differed from it): phases run in different sittings may not be comparable, say so
beside their figures. A refresh interrupted in the middle runs
again, over what the interrupted one committed: its figures are then not those of a clean refresh (for
those, delete the size's directory and start over).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import (
    argument_parser,
    code_commit,
    generate_reviews,
    latest_run_events,
    machine,
    say,
    step_pids,
    step_seconds,
    throwaway_environment,
    write_jsonl,
    write_meta,
)

# The share of reviews that follow their user's taste for sub-categories (the sample generator's 0.85):
# without tastes, popularity is the best possible model and the champion check rightly refuses to publish.
TASTE_STRENGTH = 0.85
TABLES = ("raw.reviews", "core.interactions", "ml.item_similarity", "recs.user_recommendations")


def process_tree() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    return children


def resident_bytes(pid: int) -> int:
    try:
        match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return 0
    return int(match.group(1)) * 1024 if match else 0


class PeakMemory(threading.Thread):
    """Samples, every 0.5 s, the resident memory of every process under ``root`` together with its own
    children (a step's dbt process counts towards the step) and keeps each process's peak. The
    multiprocess executor starts steps as ``multiprocessing`` children whose command line does not name
    the step; ``step_pids`` maps them to steps afterwards."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.peaks, self.stopped = root, {}, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            children = process_tree()

            def total(pid: int) -> int:
                own = resident_bytes(pid) + sum(total(child) for child in children.get(pid, []))
                self.peaks[pid] = max(self.peaks.get(pid, 0), own)
                return own

            total(self.root)


def materialize(env: dict[str, str]) -> tuple[float, dict[str, int]]:
    """Wall time of ``rec materialize`` and the peak resident memory of each step (with its children)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "rec_orchestration.cli", "materialize", "--executor",
                                "multiprocess"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    monitor = PeakMemory(process.pid)
    monitor.start()
    output, _ = process.communicate()
    monitor.stopped.set()
    if process.returncode != 0:
        sys.exit(f"rec materialize failed:\n{output[-4000:]}")
    return time.perf_counter() - started, {step: monitor.peaks.get(pid, 0) for step, pid in step_pids(env).items()}


def warehouse_figures(warehouse_url: str) -> tuple[dict[str, int], dict[str, float]]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(warehouse_url) as conn:
        counts = {table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(*table.split(".")))).fetchone()[0] for table in TABLES}
        ndcg = dict(conn.execute("""SELECT DISTINCT ON (model_name) model_name, ndcg_at_k FROM ml.model_evaluations
                                    ORDER BY model_name, evaluated_at DESC""").fetchall())
    return counts, ndcg


def run_size(size: int, seed: int, keep: bool, resume_dir: Path | None = None) -> dict:
    """Generate, land, refresh, land 1 % more, refresh again. With ``resume_dir``, the size's instance lives
    in ``resume_dir/size_<size>`` and is kept, each finished phase's figures are written to its
    ``phases.json``, and a later run picks up after the last finished phase (a 10M run need not fit in one
    sitting: the full refresh in one, the refresh after 1 % more in the next)."""
    if resume_dir is not None:
        home = resume_dir / f"size_{size}"
        home.mkdir(parents=True, exist_ok=True)
    else:
        home = Path(tempfile.mkdtemp(prefix=f"pipeline_scale_{size}_"))
    phases_file = home / "phases.json"
    phases = json.loads(phases_file.read_text()) if phases_file.exists() else {}

    def finished(phase: str, figures: dict) -> None:
        phases[phase] = figures
        if resume_dir is not None:
            phases_file.write_text(json.dumps(phases))

    env, warehouse_url = throwaway_environment(home)
    landing = home / "landing"
    try:
        if "generated" not in phases:
            landing.mkdir(exist_ok=True)
            extra = max(1, size // 100)
            say(f"[{size:,}] generating {size:,} + {extra:,} reviews")
            reviews = generate_reviews(size + extra, seed, n_users=max(size // 10, 10),
                                       n_items=max(size // 50, 10), taste_strength=TASTE_STRENGTH)
            whole = home / "all.jsonl"
            write_jsonl(reviews, whole)
            with whole.open("rb") as source, (landing / "Bench.jsonl").open("wb") as first, \
                    (home / "Bench_more.jsonl").open("wb") as rest:
                for number, line in enumerate(source):
                    (first if number < size else rest).write(line)
            whole.unlink()
            write_meta(reviews.parent_asin, landing / "meta_Bench.jsonl", seed, reviews.categories)
            del reviews
            finished("generated", {"seed": seed, "commit": code_commit()})
        if "full" not in phases:
            say(f"[{size:,}] full refresh")
            full_s, full_rss = materialize(env)
            counts, ndcg = warehouse_figures(warehouse_url)
            finished("full", {"s": full_s, "steps": step_seconds(latest_run_events(env)), "rss": full_rss,
                              "counts": counts, "ndcg": ndcg, "machine": machine(), "commit": code_commit()})
            say(f"[{size:,}] full refresh {full_s:.0f} s")
        if "more" not in phases:
            if (home / "Bench_more.jsonl").exists():  # not moved yet by an interrupted attempt
                shutil.move(home / "Bench_more.jsonl", landing / "Bench_more.jsonl")
            say(f"[{size:,}] the refresh after 1 % more")
            more_s, more_rss = materialize(env)
            counts, ndcg = warehouse_figures(warehouse_url)
            finished("more", {"s": more_s, "steps": step_seconds(latest_run_events(env)), "rss": more_rss,
                              "counts": counts, "ndcg": ndcg, "machine": machine(), "commit": code_commit()})
        full, more = phases["full"], phases["more"]
        commits = {phase: figures.get("commit", "unrecorded") for phase, figures in phases.items()}
        return {"size": size, "commits": commits, "full_s": full["s"], "full_steps": full["steps"],
                "full_rss": full["rss"], "counts": full["counts"], "ndcg": full["ndcg"], "more_s": more["s"],
                "more_steps": more["steps"], "more_rss": more["rss"], "more_counts": more["counts"],
                "more_ndcg": more["ndcg"]}
    finally:
        subprocess.run([sys.executable, "-m", "rec_orchestration.cli", "db", "stop"], env=env, capture_output=True)
        if not keep and resume_dir is None:
            shutil.rmtree(home, ignore_errors=True)


def report(result: dict) -> None:
    """One size's figures, printed as soon as it is done."""
    print(f"\n{result['size']:,} reviews: full refresh {result['full_s']:.0f} s, after +1 % "
          f"{result['more_s']:.0f} s ({result['more_s'] / result['full_s']:.2f} x)")
    print(f"  code per phase: {json.dumps(result['commits'])}")
    print(f"  rows: {json.dumps(result['counts'])}; after +1 %: {json.dumps(result['more_counts'])}")
    for label, ndcg in (("full", result["ndcg"]), ("after +1 %", result["more_ndcg"])):
        print(f"  nDCG@10 ({label}): {json.dumps({k: round(v, 4) for k, v in sorted(ndcg.items())})}")
    print(f"  {'step':48} {'full s':>8} {'peak GB':>8} {'+1% s':>8}")
    for step, seconds in sorted(result["full_steps"].items(), key=lambda pair: -pair[1]):
        print(f"  {step:48} {seconds:8.1f} {result['full_rss'].get(step, 0) / 2**30:8.2f} "
              f"{result['more_steps'].get(step, float('nan')):8.1f}")
    sys.stdout.flush()


def main() -> None:
    parser = argument_parser("bench.pipeline_scale", __doc__)
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep each size's REC_HOME")
    parser.add_argument("--resume-dir", type=Path, default=None,
                        help="keep each size's instance and finished phases here; a later run with the same "
                             "directory goes on from the last finished phase (interrupted runs: Ctrl-C, a "
                             "session's end)")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    say(machine())
    results = []
    for size in sizes:
        results.append(run_size(size, args.seed, args.keep, args.resume_dir))
        report(results[-1])
    small, large = results[0], results[-1]
    exponents = {}
    if large["size"] > small["size"]:
        ratio = math.log(large["size"] / small["size"])
        for step, seconds in large["full_steps"].items():
            if small["full_steps"].get(step, 0) > 0.5:  # steps of under half a second measure start-up noise
                exponents[step] = math.log(seconds / small["full_steps"][step]) / ratio
        print("\ngrowth exponents, " + ", ".join(f"{step} {value:.2f}" for step, value in
                                                 sorted(exponents.items(), key=lambda pair: -pair[1])))
    worst = max(exponents.values(), default=float("nan"))
    peak = max([*large["full_rss"].values(), *large["more_rss"].values(), 0]) / 2**30
    label = f"{large['size'] // 1_000_000}m" if large["size"] >= 1_000_000 else str(large["size"])
    print(f"refresh_{label}_s={large['full_s']:.0f} worst_stage_exponent={worst:.2f} peak_rss_gb={peak:.2f} "
          f"incremental_vs_full_{label}={large['more_s'] / large['full_s']:.2f}")


if __name__ == "__main__":
    main()
