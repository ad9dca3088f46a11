"""The GLUE study: ToP vs its ablations vs static and random token dropping, on the real MiniLM, with the project's
own commands. Two phases, both resumable (a killed run continues from its checkpoint, finished runs are skipped):

    python benchmarks/glue_study.py train [--jobs 2]    # teachers + every method on every task (hours on 2 cores)
    python benchmarks/glue_study.py bench               # dev metric, measured FLOPs and latency of every finished run
    python benchmarks/glue_study.py train --curve stsb  # the metric-vs-FLOPs curve (ToP and static at 1.5x..4x)
    python benchmarks/glue_study.py bench --curve stsb

Run the bench phase on an otherwise idle machine (or with --pause-training, which stops the running trainings while
timing): latency ratios are taken within one process, one task at a time.
Results: benchmarks/results/glue_minilm.{json,md} (and glue_curve_<task>.{json,png}). Runs go to runs/study/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNS = Path("runs") / "study"  # relative to the repo root (commands run there)

# Per task: the schedule shared by every method of the task (same epochs, same data, same seed), and the target.
TASKS = {
    "mrpc": dict(epochs=5, warmup=2, samples=None, target="2x"),
    "rte": dict(epochs=5, warmup=2, samples=None, target="2x"),
    "stsb": dict(epochs=3, warmup=1.5, samples=None, target="2x"),
    "cola": dict(epochs=3, warmup=1.5, samples=None, target="2x"),
    "sst2": dict(epochs=3, warmup=1.5, samples=12000, target="2x"),
}
METHODS = {  # method name in the results -> `toprune prune` options
    "top": [],
    "top_no_rank": ["--no-ranking"],
    "top_no_gates": ["--no-layer-gates"],
    "static_topk": ["--method", "static"],
    "random": ["--method", "random"],
}
CURVE_TARGETS = ["1.5x", "2x", "3x", "4x"]
CURVE_METHODS = ["top", "static_topk"]


def teacher_dir(task: str) -> Path:
    return Path("runs") / f"{task}-teacher"  # shared with benchmarks/glue_top.sh; relative to the repo root


def run_dir(task: str, method: str, target: str | None = None) -> Path:
    target = target or TASKS[task]["target"]
    suffix = "" if target == TASKS[task]["target"] else f"-{target}"
    return RUNS / f"{task}-{method}{suffix}"


def sh(cmd: list[str], log: Path | None = None, threads: int | None = None) -> bool:
    """Run one step; a failed step (e.g. a run that never met its target) is logged and the study goes on.
    ``log``: the step's own output file (parallel jobs); ``threads``: its torch/OpenMP threads."""
    print("+", " ".join(cmd), f"> {log}" if log else "", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    if log is None:
        code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    else:
        (ROOT / log).parent.mkdir(parents=True, exist_ok=True)
        with open(ROOT / log, "a") as out:
            code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        print(f"! exit code {code}: {' '.join(cmd)}", flush=True)
    return code == 0


def teacher_step(task: str, jobs: int = 1, threads: int | None = None) -> bool:
    spec = TASKS[task]
    subset = ["--max-train-samples", str(spec["samples"])] if spec["samples"] else []
    if (ROOT / teacher_dir(task) / "toprune_teacher.json").exists():
        return True
    log = RUNS / f"{task}-teacher.log" if jobs > 1 else None
    return sh(["toprune", "finetune", "--task", task, "--output", str(teacher_dir(task)), *subset], log, threads)


def run_step(task: str, method: str, target: str, jobs: int = 1, threads: int | None = None) -> bool:
    spec = TASKS[task]
    subset = ["--max-train-samples", str(spec["samples"])] if spec["samples"] else []
    out = run_dir(task, method, target)
    if (ROOT / out / "summary.json").exists():
        return True
    log = out.with_name(out.name + ".log") if jobs > 1 else None
    return sh(["toprune", "prune", "--teacher", str(teacher_dir(task)), "--task", task, "--target", target,
               "--epochs", str(spec["epochs"]), "--warmup-epochs", str(spec["warmup"]), "--output", str(out),
               "--resume", *subset, *METHODS[method]], log, threads)


def train(plan: dict[str, list[tuple[str, str]]], jobs: int = 1) -> None:
    """Every task's teacher, then its (method, target) runs; with ``jobs`` > 1 that many at once, each with its
    share of the cores (on 2 cores two 1-thread runs get more done than one 2-thread run: small matrices).
    A task's runs are queued the moment its own teacher is ready, so no core waits for another task's teacher."""
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        runs: list = []

        def teacher_then_runs(task: str) -> None:
            if teacher_step(task, jobs, threads):  # a failed teacher skips its task's runs, not the study
                runs.extend(pool.submit(run_step, task, m, t, jobs, threads) for m, t in plan[task])

        for teacher in [pool.submit(teacher_then_runs, task) for task in plan]:
            teacher.result()
        for run in runs:  # all queued by now: every teacher has finished
            run.result()


@contextmanager
def trainings_paused():
    """SIGSTOP every `toprune prune`/`toprune finetune` process of this machine (e.g. the study's own training
    phase) while the timed bench runs, SIGCONT them after, whatever happens: timing on 2 shared cores is noise."""
    pattern = "toprune (prune|finetune)"
    subprocess.run(["pkill", "-STOP", "-f", pattern], check=False)
    try:
        yield
    finally:
        subprocess.run(["pkill", "-CONT", "-f", pattern], check=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["train", "bench"])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--curve", choices=list(TASKS), help="the metric-vs-FLOPs curve of this task instead")
    parser.add_argument("--threads", type=int, default=2, help="bench: threads of the timed runtimes")
    parser.add_argument("--jobs", type=int, default=1, help="train: runs at once, each with cores/jobs threads "
                        "and its own log file beside its run folder")
    parser.add_argument("--examples", type=int, default=256, help="dev examples timed per task")
    parser.add_argument("--pause-training", action="store_true", help="bench: pause every running `toprune prune`/"
                        "`finetune` process of this machine while timing (resumed after, even on errors)")
    args = parser.parse_args(argv)
    if args.phase == "train":
        if args.curve:
            train({args.curve: [(m, t) for t in CURVE_TARGETS for m in CURVE_METHODS]}, args.jobs)
        else:
            train({task: [(m, TASKS[task]["target"]) for m in args.methods] for task in args.tasks}, args.jobs)
        return 0
    from study_bench import bench_curve, bench_tasks  # imports torch: only for the bench phase

    with trainings_paused() if args.pause_training else nullcontext():
        if args.curve:
            bench_curve(args.curve, args)
        else:
            bench_tasks(args.tasks, args.methods, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
