"""Latency-constrained vs FLOPs-constrained ToP (issue 22) -> results/latency_target.json (runs, mean ± std per
setting, equal-latency pairs) and one plot per setting (tokens kept per layer; dev metric vs measured speed-up),
results/latency_target_<task>_<backend>_b<batch>_<target>_<cpu>.png

Per task, setting (backend, serving batch size, speed-up target) and seed:
1. ``toprune prune --constraint latency --target T --inference-backend B --inference-batch-size b`` (the profile is
   measured by the first run and cached for the others, ``toprune.constraint``);
2. ``toprune prune`` with the FLOPs constraint, at the FLOPs target that the same cost model predicts to reach the
   same latency (``--flops-target matched``: the geometric static plan of that FLOPs budget, predicted on the
   task's training lengths; a learned plan of the same FLOPs may run faster or slower: the measured speed-ups show
   it), or the latency target's number itself (``same``), or a given reduction ("2.4x");
3. ``toprune bench --backend B --batch-sizes b --int8 --json`` on both: measured speed-up against the dense model in
   the same backend, dev metric (in ONNX Runtime for that backend), tokens kept per layer, and the ms of the dense
   ONNX Runtime fp32 and INT8 graphs (and the pruned INT8 graph) on the same batches.
``--stage train`` trains every run (the machine may be busy), ``--stage bench`` then measures them (quiet). Runs
resume: a finished (task, constraint, setting, seed, FLOPs target) is skipped, a killed training run continues
(``--resume``), and the JSON is rewritten after every run. Timings need a quiet machine.

    python benchmarks/latency_target.py --teachers mrpc=runs/mrpc-teacher sst2=runs/sst2-teacher \\
        stsb=runs/stsb-teacher --seeds 57,58,59 --threads 2 --prune-args "--epochs 5 --warmup-epochs 2"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EQUAL_SPEED = 0.05  # two measured speed-ups within 5% are "the same latency": the run-to-run spread of one bench
SETTINGS = "onnxruntime:1:1.5x,pytorch:32:2x"  # the issue's: b1 ONNX Runtime at 1.5x, b32 eager at 2x


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--teachers",
        nargs="+",
        required=True,
        metavar="TASK=FOLDER",
        help="fine-tuned dense teachers, e.g. mrpc=runs/mrpc-teacher",
    )
    parser.add_argument("--settings", default=SETTINGS, help="comma-separated BACKEND:BATCH:TARGET")
    parser.add_argument("--seeds", default="57,58,59")
    parser.add_argument("--threads", type=int, default=2, help="serving threads (profile and bench)")
    parser.add_argument("--flops-target", default="matched", help="matched, same, or a reduction like 2.4x")
    parser.add_argument(
        "--stage",
        choices=["all", "train", "bench"],
        default="all",
        help="train: the pruning runs only (any time); bench: measure trained runs (quiet machine)",
    )
    parser.add_argument("--prune-args", default="", help='extra `toprune prune` options, e.g. "--epochs 5"')
    parser.add_argument("--bench-args", default="", help='extra `toprune bench` options, e.g. "--examples 256"')
    parser.add_argument("--data-dir", help="GLUE folder (default: toprune's, ../shared/data)")
    parser.add_argument("--workdir", default="runs/latency_target", help="run folders")
    parser.add_argument(
        "--costmodel",
        nargs="+",
        default=[str(HERE / "results" / name) for name in ("latency_costmodel.json", "latency_costmodel_epyc.json")],
        help="latency_costmodel.py's outputs (one per CPU the runs were made on): the worst error is copied",
    )
    parser.add_argument("--output", default=str(HERE / "results" / "latency_target.json"))
    return parser.parse_args(argv)


def toprune_cli(args: list[str], capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "toprune.cli", *args]
    print("$ toprune " + shlex.join(args), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): toprune {shlex.join(args)}")
    return done.stdout if capture else ""


def train(teacher: str, task: str, folder: Path, options: list[str], common: list[str]) -> None:
    if (folder / "best").is_dir() and (folder / "summary.json").is_file():
        return  # trained already
    resume = ["--resume"] if folder.is_dir() and any(folder.iterdir()) else []
    toprune_cli(["prune", "--teacher", teacher, "--task", task, "--output", str(folder), *options, *common, *resume])


def matched_flops_target(
    teacher: str,
    task: str,
    backend: str,
    batch: int,
    threads: int,
    target: float,
    data_dir: str | None,
) -> float:
    """The FLOPs reduction whose geometric static plan the (cached) latency profile predicts to be ``target``x
    faster on the training examples' lengths (as `prune` reads them: the profile is the one its runs use)."""
    from toprune.constraint import latency_cost
    from toprune.data import default_glue_dir
    from toprune.flops import EncoderDims
    from toprune.plan import default_pruning_layers
    from toprune.pretrained import load_model
    from toprune.profile import training_lengths
    from toprune.static import plan_relative_macs, static_plan

    model = load_model(teacher)
    lengths = training_lengths(teacher, task, data_dir or default_glue_dir())
    cost = latency_cost(model, backend, batch, threads, log=lambda line: print(line, file=sys.stderr), lengths=lengths)
    dims = EncoderDims.from_config(model.config)
    layers = default_pruning_layers(dims.num_layers)

    def predicted_speedup(flops: float) -> float:
        plan = static_plan(dims, layers, [lengths], 1.0 / flops)
        return 1.0 / plan_relative_macs(cost, plan, lengths)

    low, high = 1.0, 1.0
    while predicted_speedup(high) < target:  # static_plan refuses a FLOPs budget no plan reaches: one line
        low, high = high, high * 1.25
    for _ in range(20):
        mid = (low + high) / 2
        low, high = (mid, high) if predicted_speedup(mid) < target else (low, mid)
    return round(high, 3)


def main(argv=None) -> int:
    from toprune.costmodel import cpu_name

    args = parse_args(argv)
    out, workdir = Path(args.output), Path(args.workdir)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    runs = doc.get("runs", [])
    done = {_key(r) for r in runs}
    teachers = dict(item.split("=", 1) for item in args.teachers)
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    for setting in args.settings.split(","):
        backend, batch, target = setting.split(":")
        batch, target_x = int(batch), float(target.rstrip("x"))
        for task, teacher in teachers.items():
            twin = None  # the FLOPs target of the twins, computed once per setting (matched reads the profile)
            for seed in [int(s) for s in args.seeds.split(",")]:
                for constraint in ("latency", "flops"):
                    if constraint == "flops" and twin is None:
                        twin = flops_target(args, teacher, task, backend, batch, target_x)
                    flops = twin if constraint == "flops" else None
                    key = (task, constraint, backend, batch, target_x, seed, flops)
                    if key in done:
                        continue
                    folder = workdir / run_name(task, constraint, backend, batch, target, seed, flops)
                    common = ["--seed", str(seed), *data, *shlex.split(args.prune_args)]
                    extra = {}
                    if constraint == "latency":
                        options = [
                            "--target",
                            target,
                            "--constraint",
                            "latency",
                            "--inference-backend",
                            backend,
                            "--inference-batch-size",
                            str(batch),
                            "--inference-threads",
                            str(args.threads),
                        ]
                    else:
                        options, extra = ["--target", f"{flops}x"], {"flops_target": flops}
                    if args.stage != "bench":
                        train(teacher, task, folder, options, common)
                    if args.stage == "train":
                        continue
                    if not (folder / "summary.json").is_file():
                        raise SystemExit(f"{folder} is not trained yet: run --stage train first")
                    bench = json.loads(
                        toprune_cli(
                            [
                                "bench",
                                "--dense",
                                teacher,
                                "--pruned",
                                str(folder / "best"),
                                "--task",
                                task,
                                "--backend",
                                backend,
                                "--batch-sizes",
                                str(batch),
                                "--threads",
                                str(args.threads),
                                "--int8",  # the dense ONNX Runtime fp32/INT8 rows: what a CPU user already runs
                                "--json",
                                *data,
                                *shlex.split(args.bench_args),
                            ],
                            capture=True,
                        )
                    )
                    summary = json.loads((folder / "summary.json").read_text())
                    pruned_ms = bench["pruned"][f"latency_ms_b{batch}"]
                    dense_ort = bench["dense_onnxruntime"][f"latency_ms_b{batch}"]
                    int8 = bench.get("int8", {})
                    runs.append(
                        {
                            "task": task,
                            "constraint": constraint,
                            "backend": backend,
                            "batch_size": batch,
                            "target_speedup": target_x,
                            "measured_speedup": bench[f"speedup_b{batch}"],
                            "metric": bench["pruned"]["metric"],
                            "metric_name": bench["metric_name"],
                            "seed": seed,
                            "keep_per_layer": bench["pruned"]["kept_fraction_per_layer"],
                            "flops_reduction_unpadded": bench["pruned"]["flops_reduction_unpadded"],
                            "predicted_speedup": (summary.get("best") or {}).get("predicted_speedup"),
                            "dense_metric": bench["dense"]["metric"],
                            "pruned_ms": pruned_ms,
                            "dense_ms": bench["dense"][f"latency_ms_b{batch}"],
                            "dense_onnxruntime_ms": dense_ort,
                            "speedup_vs_dense_onnxruntime": dense_ort / pruned_ms,
                            "dense_onnxruntime_int8_ms": int8.get(f"dense_ms_b{batch}"),
                            "pruned_onnxruntime_int8_ms": int8.get(f"pruned_ms_b{batch}"),
                            "run": str(folder),
                            "cpu": cpu_name(),  # a fresh machine may be another CPU: ratios compare within one
                            "prune_args": args.prune_args,  # tasks may be trained on different schedules
                            **extra,
                        }
                    )
                    write(out, args, runs)
    if args.stage != "train":  # a training-only pass measured nothing: it must not rewrite the file
        write(out, args, runs)
    return 0


def flops_target(args, teacher: str, task: str, backend: str, batch: int, target: float) -> float:
    if args.flops_target == "same":
        return target
    if args.flops_target == "matched":
        return matched_flops_target(teacher, task, backend, batch, args.threads, target, args.data_dir)
    return float(args.flops_target.rstrip("x"))


def cost_model_error(paths: list[str], runs: list[dict]) -> dict:
    """The worst median abs error of the cost model (uniform and real batches) over the runs' (backend, batch size)
    settings, from latency_costmodel.py's outputs of the CPUs the runs were made on (all files when a run's CPU is
    unknown), per file and over all of them."""
    wanted = {(r["backend"], r["batch_size"]) for r in runs}
    cpus = {r.get("cpu") for r in runs}
    per_file = {}
    for path in paths:
        if not Path(path).is_file():
            continue
        doc = json.loads(Path(path).read_text())
        cpu = doc.get("environment", {}).get("cpu")
        if None not in cpus and cpu not in cpus:
            continue
        errors = [
            e
            for r in doc.get("summary", [])
            if (r["backend"], r["batch_size"]) in wanted
            for e in (r["uniform_median_abs_error"], r["real_median_abs_error"])
            if e is not None
        ]
        if errors:
            per_file[Path(path).name] = {"cpu": cpu, "worst": max(errors)}
    return {"worst": max((v["worst"] for v in per_file.values()), default=None), "per_file": per_file}


def run_name(task: str, constraint: str, backend: str, batch: int, target: str, seed: int, flops: float | None) -> str:
    """A FLOPs twin's folder names its FLOPs target: one setting may have twins at several (an equal-latency pair
    needs the twin whose *measured* latency matches)."""
    kind = constraint if flops is None else f"{constraint}{flops:g}x"
    return f"{task}-{kind}-{backend}-b{batch}-{target}-s{seed}"


def _key(run: dict) -> tuple:
    fields = ("task", "constraint", "backend", "batch_size", "target_speedup", "seed", "flops_target")
    return tuple(run.get(k) for k in fields)


def write(out: Path, args: argparse.Namespace, runs: list[dict]) -> None:
    """The file's rows merged with ours by (task, constraint, setting, seed, FLOPs target), ours winning: another
    process (a bench of other seeds) may have written rows since this one read the file."""
    merged = {_key(r): r for r in (json.loads(out.read_text()).get("runs", []) if out.is_file() else [])}
    merged.update({_key(r): r for r in runs})
    order = ("task", "backend", "batch_size", "seed", "constraint")
    runs = sorted(merged.values(), key=lambda r: (*(r[k] for k in order), r.get("flops_target") or 0.0))
    errors = cost_model_error(args.costmodel, runs)
    doc = {
        "cost_model_median_abs_error": errors["worst"],
        "cost_model_errors_per_cpu": errors["per_file"],
        "what": "ToP with the latency constraint vs the FLOPs constraint (each FLOPs row's target in its "
        "flops_target: matched by the cost model, or given to find the twin of equal measured latency); measured "
        "by `toprune bench` in the setting's backend and batch size, metric on the full dev set",
        "threads": args.threads,  # settings and training options are per row: runs of several invocations merge
        "summary": (summary := summarise(runs)),
        "pairs": equal_latency_pairs(summary),
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    for setting, path in plot_settings(runs, out).items():
        print(f"plot of {setting}: {path}", file=sys.stderr)


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and std over seeds per (task, CPU, backend, batch, target, constraint): what the issue compares."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        key = (r["task"], r.get("cpu"), r["backend"], r["batch_size"], r["target_speedup"], r["constraint"])
        groups.setdefault((*key, r.get("flops_target")), []).append(r)
    rows = []
    for (task, cpu, backend, batch, target, constraint, flops), group in groups.items():
        row = {"task": task, "cpu": cpu, "backend": backend, "batch_size": batch, "target_speedup": target}
        row |= {"constraint": constraint, "seeds": sorted(r["seed"] for r in group)}
        row |= {"flops_target": flops} if flops is not None else {}
        for name in ("metric", "measured_speedup", "flops_reduction_unpadded", "speedup_vs_dense_onnxruntime"):
            values = [r[name] for r in group if r.get(name) is not None]
            if values:
                row[f"{name}_mean"] = statistics.mean(values)
                row[f"{name}_std"] = _std(values)
        rows.append(row)
    return rows


def equal_latency_pairs(summary: list[dict]) -> list[dict]:
    """Per setting, the latency-constrained mean beside the FLOPs twin whose mean *measured* speed-up is closest: the
    issue compares accuracy at the same measured latency, and a twin trained at the matched FLOPs may run faster or
    slower than the latency runs (``speed_ratio`` says by how much; within ``EQUAL_SPEED`` counts as equal)."""
    pairs = []
    for row in (r for r in summary if r["constraint"] == "latency" and "measured_speedup_mean" in r):
        setting = ("task", "cpu", "backend", "batch_size", "target_speedup")
        twins = [
            r
            for r in summary
            if r["constraint"] == "flops" and "measured_speedup_mean" in r and all(r[k] == row[k] for k in setting)
        ]
        if not twins:
            continue
        twin = min(twins, key=lambda r: abs(r["measured_speedup_mean"] / row["measured_speedup_mean"] - 1))
        ratio = row["measured_speedup_mean"] / twin["measured_speedup_mean"]
        pairs.append(
            {k: row[k] for k in setting}
            | {
                "latency_metric": row["metric_mean"],
                "latency_seeds": row["seeds"],
                "twin_flops_target": twin.get("flops_target"),
                "twin_metric": twin["metric_mean"],
                "twin_seeds": twin["seeds"],
                "metric_gain": row["metric_mean"] - twin["metric_mean"],
                "speed_ratio": ratio,
                "equal_speed": abs(ratio - 1) <= EQUAL_SPEED,
            }
        )
    return pairs


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _series(run: dict) -> str:
    return "latency" if run["constraint"] == "latency" else f"FLOPs {run['flops_target']:g}x"


def plot_settings(runs: list[dict], out: Path) -> dict[tuple, Path]:
    """One figure per (task, CPU, backend, batch, target): left, tokens kept per layer of every run (thin) and the
    mean per series (thick): where the two constraints prune differently; right, dev metric vs measured speed-up,
    every seed and the series means with their std, the dense teacher dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings: dict[tuple, list[dict]] = {}
    for r in runs:
        settings.setdefault((r["task"], r.get("cpu"), r["backend"], r["batch_size"], r["target_speedup"]), []).append(r)
    paths = {}
    for (task, cpu, backend, batch, target), group in settings.items():
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        twins = sorted({_series(r) for r in group} - {"latency"})
        for name in ["latency", *twins]:  # the latency runs keep one colour in every figure, twins the next ones
            color, rows = f"C{twins.index(name) + 1 if name in twins else 0}", [r for r in group if _series(r) == name]
            if not rows:
                continue
            kept = [r["keep_per_layer"] for r in rows]
            for k in kept:
                left.plot(range(len(k)), k, color=color, alpha=0.3, linewidth=1)
            left.plot(range(len(kept[0])), [statistics.mean(c) for c in zip(*kept)], "o-", color=color, label=name)
            x, y = [r["measured_speedup"] for r in rows], [r["metric"] for r in rows]
            right.scatter(x, y, color=color, alpha=0.4)
            right.errorbar(
                statistics.mean(x),
                statistics.mean(y),
                xerr=_std(x),
                yerr=_std(y),
                fmt="s",
                color=color,
                capsize=4,
                label=f"{name}: {statistics.mean(y):.2f} at {statistics.mean(x):.2f}x ({len(rows)} seeds)",
            )
        right.axhline(group[0]["dense_metric"], color="grey", linestyle="--", label="dense teacher")
        right.axvline(target * 0.9, color="grey", linestyle=":", label=f"0.9 x the {target:g}x target")
        left.set(xlabel="layer", ylabel="share of the example's tokens entering the layer (dev)", ylim=(0, 1.05))
        right.set(xlabel=f"measured speed-up, {backend} b{batch} (x)", ylabel=f"dev {group[0]['metric_name']}")
        for ax in (left, right):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{task}: latency vs FLOPs constraint, {backend} b{batch}, {target:g}x target ({cpu})")
        fig.tight_layout()
        maker = "".join(c for c in (cpu or "cpu").split()[0].lower() if c.isalnum()).removesuffix("r")  # amd, intel
        path = out.with_name(f"{out.stem}_{task}_{backend}_b{batch}_{target:g}x_{maker}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[(task, cpu, backend, batch, target)] = path
    return paths


if __name__ == "__main__":
    sys.exit(main())
