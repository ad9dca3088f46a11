"""The GLUE study: ToP vs its ablations vs static and random token dropping, on the real MiniLM, with the project's
own commands. Two phases, both resumable (a killed run continues from its checkpoint, finished runs are skipped):

    python benchmarks/glue_study.py train [--jobs 2]    # teachers + every method on every task (about a day, 2 cores)
    python benchmarks/glue_study.py bench               # dev metric, measured FLOPs and latency of every finished run
    python benchmarks/glue_study.py budget              # the plan of runs and its estimated core-hours
    python benchmarks/glue_study.py seeds               # dev metric and FLOPs per seed of finished runs (no timing)
    python benchmarks/glue_study.py train --curve stsb  # the metric-vs-FLOPs curve (ToP and static at 1.5x..4x)
    python benchmarks/glue_study.py train --tasks sst2 --methods top_value static_value --targets 1.5x  # 3 seeds
    python benchmarks/glue_study.py bench --curve stsb

Run the bench phase on an otherwise idle machine (or with --pause-training, which stops the running trainings while
timing): latency ratios are taken within one process, one task at a time.
Results: benchmarks/results/glue_minilm.{json,md} (and glue_curve_<task>.{json,png}; glue_seeds.json from `seeds`).
Runs go to runs/study/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNS = Path("runs") / "study"  # relative to the repo root (commands run there)

# Per task: the schedule shared by every method of the task (same epochs, same data, same seed), and the target;
# teacher_samples: the teacher's training subset where it differs (SST-2's teacher was searched on 20,000 sentences)
TASKS = {
    "mrpc": dict(epochs=5, warmup=2, samples=None, target="2x"),
    "rte": dict(epochs=5, warmup=2, samples=None, target="2x"),
    "stsb": dict(epochs=3, warmup=1.5, samples=None, target="2x"),
    "cola": dict(epochs=3, warmup=1.5, samples=None, target="2x"),
    "sst2": dict(epochs=3, warmup=1.5, samples=12000, teacher_samples=20000, target="2x"),
}
METHODS = {  # method name in the results -> `toprune prune` options
    "top": [],
    "top_no_rank": ["--no-ranking"],
    "top_no_gates": ["--no-layer-gates"],
    "static_topk": ["--method", "static"],
    "random": ["--method", "random"],
    # [ours] the value scorer (attention received weighted by value norms; section 11, session 17's zero-shot probe)
    "top_value": ["--scorer", "value"],
    "static_value": ["--method", "static", "--scorer", "value"],
}
# Seeds (training seed and data order) per method and target: the methods whose comparison decides something get
# three at the main target (ToP vs static: the bar; ToP with vs without layer gates: the default variant);
# everything else one, to spend the 2 cores where a comparison is decided.
SEEDS = (57, 58, 59)
MAIN_SEEDED = ("top", "top_no_gates", "static_topk", "top_value", "static_value")
EXTRA_TARGET = "3x"  # one more row per task, every method, one seed
CURVE_TARGETS = ["1.5x", "2x", "3x", "4x"]
CURVE_METHODS = ["top", "static_topk"]
GLUE_DIRS = {"mrpc": "MRPC", "rte": "RTE", "stsb": "STS-B", "cola": "CoLA", "sst2": "SST-2"}
# seconds per ToP training step (batch 32, one thread), for the budget. MRPC measured in session 10: 1.9-2.1 s with
# two one-thread runs side by side on the 2 cores (evaluations included); SST-2 in session 24 (Intel Xeon, the same
# way: `mean_step_ms` 1.05-1.45 s for ToP, 0.6-0.9 s for static); the others scaled from MRPC by mean training
# length (RTE ~1.4x, STS-B ~0.6x, CoLA ~0.3x): re-measure with `mean_step_ms` of a finished run
STEP_SECONDS = {"mrpc": 2.0, "rte": 2.8, "stsb": 1.2, "cola": 0.6, "sst2": 1.2}


def teacher_dir(task: str) -> Path:
    return Path("runs") / f"{task}-teacher"  # shared with benchmarks/glue_top.sh; relative to the repo root


def run_dir(task: str, method: str, target: str | None = None, seed: int = SEEDS[0]) -> Path:
    target = target or TASKS[task]["target"]
    suffix = "" if target == TASKS[task]["target"] else f"-{target}"
    suffix += "" if seed == SEEDS[0] else f"-s{seed}"  # the first seed keeps the folder names of earlier studies
    return RUNS / f"{task}-{method}{suffix}"


def study_plan(
    tasks: list[str], methods: list[str], targets: list[str] | None = None
) -> dict[str, list[tuple[str, str, int]]]:
    """task -> its (method, target, seed) runs: 3 seeds of ToP and static at the main target, one of the rest,
    one seed of every method at EXTRA_TARGET; with ``targets``, those targets instead, seeded the same way."""

    def seeded(method: str) -> tuple[int, ...]:
        return SEEDS if method in MAIN_SEEDED else SEEDS[:1]

    plan = {}
    for task in tasks:
        if targets:
            plan[task] = [(m, t, s) for t in targets for m in methods for s in seeded(m)]
            continue
        main = TASKS[task]["target"]
        runs = [(m, main, s) for m in methods for s in seeded(m)]
        runs += [(m, EXTRA_TARGET, SEEDS[0]) for m in methods if EXTRA_TARGET != main]
        plan[task] = runs
    return plan


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
    samples = TASKS[task].get("teacher_samples", TASKS[task]["samples"])
    subset = ["--max-train-samples", str(samples)] if samples else []
    if (ROOT / teacher_dir(task) / "toprune_teacher.json").exists():
        return True
    log = RUNS / f"{task}-teacher.log" if jobs > 1 else None
    return sh(["toprune", "finetune", "--task", task, "--output", str(teacher_dir(task)), *subset], log, threads)


def run_step(
    task: str, method: str, target: str, seed: int = SEEDS[0], jobs: int = 1, threads: int | None = None
) -> bool:
    spec = TASKS[task]
    subset = ["--max-train-samples", str(spec["samples"])] if spec["samples"] else []
    out = run_dir(task, method, target, seed)
    if (ROOT / out / "summary.json").exists():
        return True
    log = out.with_name(out.name + ".log") if jobs > 1 else None
    return sh(
        [
            "toprune",
            "prune",
            "--teacher",
            str(teacher_dir(task)),
            "--task",
            task,
            "--target",
            target,
            "--epochs",
            str(spec["epochs"]),
            "--warmup-epochs",
            str(spec["warmup"]),
            "--output",
            str(out),
            "--seed",
            str(seed),
            "--resume",
            *subset,
            *METHODS[method],
        ],
        log,
        threads,
    )


def train(plan: dict[str, list[tuple[str, str, int]]], jobs: int = 1) -> None:
    """Every task's teacher, then its (method, target) runs; with ``jobs`` > 1 that many at once, each with its
    share of the cores (on 2 cores two 1-thread runs get more done than one 2-thread run: small matrices).
    A task's runs are queued the moment its own teacher is ready, so no core waits for another task's teacher."""
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        runs: list = []

        def teacher_then_runs(task: str) -> None:
            if teacher_step(task, jobs, threads):  # a failed teacher skips its task's runs, not the study
                runs.extend(pool.submit(run_step, task, m, t, s, jobs, threads) for m, t, s in plan[task])

        for teacher in [pool.submit(teacher_then_runs, task) for task in plan]:
            teacher.result()
        for run in runs:  # all queued by now: every teacher has finished
            run.result()


def train_examples(task: str) -> int:
    """Training examples of a task as the study uses them (its subset, less the held-out selection slice)."""
    from toprune.selection import heldout_size

    path = ROOT.parent / "shared" / "data" / "glue" / GLUE_DIRS[task] / "train.tsv"
    total = TASKS[task]["samples"] or sum(1 for _ in path.open()) - 1
    return total - heldout_size(total)


def print_budget(plan: dict[str, list[tuple[str, str, int]]]) -> None:
    """Steps of every run of the plan and the core-hours they cost at the measured seconds per step of this
    machine (STEP_SECONDS: one-thread steps of batch 32, measured on the study's tasks); finished runs cost 0."""
    total = 0.0
    for task, runs in plan.items():
        steps = -(-train_examples(task) // 32) * TASKS[task]["epochs"]
        todo = [r for r in runs if not (ROOT / run_dir(task, *r) / "summary.json").exists()]
        hours = len(todo) * steps * STEP_SECONDS[task] / 3600
        total += hours
        print(f"{task}: {len(runs)} runs ({len(todo)} to do) x {steps:.0f} steps -> {hours:.1f} core-hours")
    print(f"total: {total:.1f} core-hours, about {total / 2:.1f} h on 2 cores with --jobs 2")


def seed_rows(plan: dict[str, list[tuple[str, str, int]]]) -> list[dict]:
    """Per (task, method, target): the dev metric of every finished seed (each run's summary.json: chosen on the
    held-out slice, dev read once), mean and sample std, and FLOPs both conventions. Nothing is timed."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for task, runs in plan.items():
        for method, target, seed in runs:
            summary = ROOT / run_dir(task, method, target, seed) / "summary.json"
            dev = json.loads(summary.read_text())["dev"] if summary.exists() else None
            if dev is not None:  # None: not finished, or never met its target (its summary says so)
                groups.setdefault((task, method, target), []).append({"seed": seed, **dev})
    rows = []
    for (task, method, target), done in groups.items():
        metrics = [d["metric"] for d in done]
        rows.append(
            {
                "task": task,
                "method": method,
                "flops_target": target,
                "seeds": [d["seed"] for d in done],
                "metric_per_seed": [round(m, 2) for m in metrics],
                "metric": round(statistics.mean(metrics), 2),
                "std": round(statistics.stdev(metrics), 2) if len(metrics) > 1 else None,
                "flops_reduction_unpadded": round(statistics.mean(d["flops_reduction_unpadded"] for d in done), 3),
                "flops_reduction_padded": round(statistics.mean(d["flops_reduction_padded"] for d in done), 2),
                "kept_fraction_per_layer": [
                    round(statistics.mean(d["kept_fraction_per_layer"][i] for d in done), 3)
                    for i in range(len(done[0]["kept_fraction_per_layer"]))
                ],
            }
        )
    return rows


def write_seed_rows(rows: list[dict], path: Path) -> None:
    """Fresh rows replace the file's rows of the same (task, method, target); the others stay."""
    key = lambda r: (r["task"], r["method"], r["flops_target"])  # noqa: E731
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    fresh = {key(r) for r in rows}
    merged = sorted([r for r in old if key(r) not in fresh] + rows, key=key)
    path.write_text(
        json.dumps(
            {"what": "dev metric per seed of finished study runs (glue_study.py seeds)", "rows": merged}, indent=1
        )
        + "\n"
    )
    for r in rows:
        spread = f" ± {r['std']:.2f}" if r["std"] is not None else ""
        print(
            f"{r['task']} {r['method']} {r['flops_target']}: {r['metric']:.2f}{spread} (seeds {r['seeds']}: "
            f"{r['metric_per_seed']}), FLOPs {r['flops_reduction_unpadded']:.2f}x / {r['flops_reduction_padded']:.2f}x"
        )


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
    parser.add_argument("phase", choices=["train", "bench", "budget", "seeds"])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--curve", choices=list(TASKS), help="the metric-vs-FLOPs curve of this task instead")
    parser.add_argument(
        "--targets",
        nargs="+",
        help="these FLOPs targets instead of the main one and the 3x row, seeded as the main one (e.g. 1.5x)",
    )
    parser.add_argument("--threads", type=int, default=2, help="bench: threads of the timed runtimes")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="train: runs at once, each with cores/jobs threads and its own log file beside its run folder",
    )
    parser.add_argument("--examples", type=int, default=256, help="dev examples timed per task")
    parser.add_argument(
        "--pause-training",
        action="store_true",
        help="bench: pause every running `toprune prune`/"
        "`finetune` process of this machine while timing (resumed after, even on errors)",
    )
    args = parser.parse_args(argv)
    plan = (
        {args.curve: [(m, t, SEEDS[0]) for t in CURVE_TARGETS for m in CURVE_METHODS]}
        if args.curve
        else study_plan(args.tasks, args.methods, args.targets)
    )
    if args.phase == "budget":
        print_budget(plan)
        return 0
    if args.phase == "train":
        train(plan, args.jobs)
        return 0
    if args.phase == "seeds":
        write_seed_rows(seed_rows(plan), HERE / "results" / "glue_seeds.json")
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
