"""The bench phase of benchmarks/glue_study.py: dev metric, measured FLOPs and latency of every finished run.

Per task, in one process: the dense teacher and every method's kept model are evaluated on the full dev set
(metric, FLOPs reduction measured on the inference path, both conventions), then timed on the first N dev inputs
with the same protocol as `toprune bench` (dynamic padding, warm-up + 5 passes, median): dense HF eager (SDPA) vs
each pruned model in PyTorch (the `speedup_*` columns), and dense vs pruned exported to ONNX Runtime
(`onnx_speedup_*`; the random baseline is not exported).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

import toprune
from glue_study import CURVE_METHODS, CURVE_TARGETS, METHODS, ROOT, TASKS, run_dir, study_plan, teacher_dir
from toprune import ToPruneError
from toprune.benchmark import compare_latency, environment, ort_runner, torch_runner
from toprune.export import export_onnx
from toprune.plots import plot_metric_vs_flops
from toprune.selection import Selection
from toprune.train import evaluate, make_loader, prepare_data

RESULTS = ROOT / "benchmarks" / "results"


def _dev(task: str, tokenizer):
    data = prepare_data(tokenizer, task, str(ROOT.parent / "shared" / "data" / "glue"), 128, dev_only=True)
    return data, make_loader(data.dev, tokenizer, 64, False)


def _run_info(folder: Path) -> dict:
    summary = json.loads((ROOT / folder / "summary.json").read_text())
    cfg = summary["config"]
    return {
        "kept_step": summary["best"]["step"] if summary["best"] else None,
        "steps": summary["steps"],
        "epochs": cfg["epochs"],
        "warmup_epochs": cfg["warmup_epochs"],
        "train_examples": summary["train_examples"],
        "seed": cfg["seed"],
        "target": cfg["target"],
        "mean_step_ms": round(summary["mean_step_ms"], 1),
        "selection": Selection(**_selection_fields(summary["selection"])).describe(),
    }


def _selection_fields(recorded: dict) -> dict:
    return {k: recorded[k] for k in ("on", "examples", "train_examples")}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0


def bench_task(task: str, methods: list[str], args) -> list[dict]:
    """Every finished run of the task's study plan, evaluated and timed one by one, then one row per (method,
    target): the mean over its seeds, with the std and the per-seed values beside it."""
    torch.set_num_threads(args.threads)
    tokenizer = toprune.load_tokenizer(ROOT / teacher_dir(task))
    data, loader = _dev(task, tokenizer)
    dense = toprune.load_model(ROOT / teacher_dir(task))
    dense_row = {
        "task": task,
        "method": "dense",
        "metric": evaluate(dense, loader, data)["metric"],
        "flops_reduction_unpadded": 1.0,
        "flops_reduction_padded": 1.0,
        "speedup_b1": 1.0,
        "speedup_b32": 1.0,
        "seeds": [],
        "std": 0.0,
    }
    runs, models = [], {}
    for method, target, seed in study_plan([task], methods, args.targets)[task]:
        folder = run_dir(task, method, target, seed)
        if not (ROOT / folder / "summary.json").exists():  # a run still training has a best/ but no summary yet
            print(f"{task}/{method}/{target}/seed {seed}: no finished run in {folder}, skipped")
            continue
        model = toprune.load_model(ROOT / folder / "best")
        result = evaluate(model, loader, data)
        key = folder.name
        models[key] = model
        runs.append(
            {
                "key": key,
                "method": method,
                "target": target,
                "seed": seed,
                "metric": result["metric"],
                "flops_reduction_unpadded": result["flops_reduction_unpadded"],
                "flops_reduction_padded": result["flops_reduction_padded"],
                "kept_fraction_per_layer": result["kept_fraction_per_layer"],
                "run": _run_info(folder),
            }
        )
    dev = data.dev_raw.select(range(min(args.examples, len(data.dev_raw))))
    texts_b = list(dev["text_b"]) if "text_b" in dev.column_names else None
    with tempfile.TemporaryDirectory() as tmp:
        runners = {"dense": ("dense HF eager (SDPA)", torch_runner(dense))}
        export_onnx(dense, tokenizer, Path(tmp) / "dense")
        runners["dense_ort"] = ("dense ONNX Runtime", ort_runner(Path(tmp) / "dense", args.threads))
        for run in runs:
            key = run["key"]
            runners[key] = (f"{key} (PyTorch)", torch_runner(models[key]))
            if run["method"] == "random":
                continue  # not exportable (random draws): no ONNX row
            try:
                export_onnx(models[key], tokenizer, Path(tmp) / key)
            except ToPruneError as exc:  # keep the task's other rows; the ONNX columns stay empty
                print(f"{task}/{key}: ONNX export skipped: {exc}")
                continue
            runners[f"{key}_ort"] = (f"{key} ONNX Runtime", ort_runner(Path(tmp) / key, args.threads))
        lat = compare_latency(runners, tokenizer, list(dev["text_a"]), texts_b, (1, 32), 5, 128)
    for b in (1, 32):
        dense_row[f"ms_b{b}"], dense_row[f"onnx_ms_b{b}"] = lat["dense"][b], lat["dense_ort"][b]
    for run in runs:
        key = run["key"]
        for b in (1, 32):
            run[f"ms_b{b}"] = lat[key][b]
            run[f"speedup_b{b}"] = lat["dense"][b] / lat[key][b]
            if f"{key}_ort" in lat:
                run[f"onnx_ms_b{b}"] = lat[f"{key}_ort"][b]
                run[f"onnx_speedup_b{b}"] = lat["dense_ort"][b] / lat[f"{key}_ort"][b]
    rows = [dense_row]
    # where and how the task's rows were made: a re-bench of one task must not borrow another run's CPU or protocol
    dense_row["measured"] = {
        **environment(args.threads),
        "date": time.strftime("%Y-%m-%d"),
        # the dev-only data carries no slice: each run's summary says how its checkpoint was chosen
        "selection": "; ".join(sorted({r["run"]["selection"] for r in runs})),
        "teacher": str(teacher_dir(task)),
    }
    for method in methods:
        targets = dict.fromkeys(r["target"] for r in runs if r["method"] == method)
        for target in targets:
            group = [r for r in runs if r["method"] == method and r["target"] == target]
            row = {
                "task": task,
                "method": method,
                "flops_target": target,
                "seeds": [r["seed"] for r in group],
                "per_seed": group,
            }
            row["metric"], row["std"] = _mean_std([r["metric"] for r in group])
            for key in (
                "flops_reduction_unpadded",
                "flops_reduction_padded",
                "speedup_b1",
                "speedup_b32",
                "ms_b1",
                "ms_b32",
                "onnx_ms_b1",
                "onnx_ms_b32",
                "onnx_speedup_b1",
                "onnx_speedup_b32",
            ):
                if all(key in r for r in group):
                    row[key] = _mean_std([r[key] for r in group])[0]
            for b in (1, 32):
                row[f"speedup_over_flops_b{b}"] = row[f"speedup_b{b}"] / row["flops_reduction_unpadded"]
            rows.append(row)
    for row in rows:
        row["metric_name"] = data.metric
        row["measured"] = dense_row["measured"]  # each row says where it was timed: a re-bench may cover some methods
    return rows


def _merge(path: Path, rows: list[dict]) -> list[dict]:
    """Fresh rows replace the old rows of the same (task, method, FLOPs target); the task's other rows stay, each
    with its own speed-ups (against the dense model of the run that timed it) and its own ``measured`` record."""
    old = json.loads(path.read_text()) if path.exists() else []

    def key(r: dict) -> tuple:  # the earlier study's rows carry no target: they were at the task's main one
        target = r.get("flops_target") or (None if r["method"] == "dense" else TASKS[r["task"]]["target"])
        return r["task"], r["method"], target

    fresh = {key(r) for r in rows}
    dense = {d["task"]: d["measured"] for d in old if d["method"] == "dense" and "measured" in d}
    for r in old:  # a kept row timed before rows carried their own record: it was timed with its task's dense row
        if "measured" not in r and r.get("flops_target") and r["task"] in dense:
            r["measured"] = dense[r["task"]]
    merged = [r for r in old if key(r) not in fresh] + rows
    order = {t: i for i, t in enumerate(TASKS)}
    methods = ["dense", *METHODS]  # the study's order
    merged.sort(key=lambda r: (order[r["task"]], methods.index(r["method"]), float(r.get("flops_target", "0x")[:-1])))
    path.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def _where(m: dict | None) -> str:
    if not m:
        return (
            "the earlier study (one seed; CPU AMD EPYC, 2 threads; earlier teachers; checkpoints selected on dev, "
            "the paper's convention): not comparable with the rows measured since"
        )
    return (
        f"{m['date']}, {m['cpu']}, {m['threads']} threads, torch {m['torch']}, onnxruntime {m['onnxruntime']}; "
        f"teacher {m['teacher']}; checkpoints {m['selection']}"
    )


def markdown(rows: list[dict]) -> str:
    """The study table; the dense row carries the dense ONNX Runtime latency, the serving competitor."""
    lines = [
        "ms = median ms per batch (PyTorch eager; ONNX Runtime); speed-ups are against the dense model in the same "
        "runtime, measured in the same process. Where each task's rows come from:",
        "",
    ]
    for task in dict.fromkeys(r["task"] for r in rows):
        groups: dict[str, list[str]] = {}  # rows without a record (after _merge): the earlier study's
        for r in rows:
            if r["task"] == task:
                label = r["method"] + (f" {r['flops_target']}" if r.get("flops_target") else "")
                groups.setdefault(_where(r.get("measured")), []).append(label)
        for where, labels in groups.items():
            lines.append(f"- {task} ({', '.join(labels)}): {where}")
    lines += [
        "",
        "| task | method | FLOPs target | metric (mean ± std, seeds) | FLOPs red. unpadded "
        "| FLOPs red. padded 128 | ms b1 | ms b32 | speed-up b1 "
        "| speed-up b32 | speed-up / FLOPs (b1, b32) | ONNX RT ms b1 | ONNX RT ms b32 | ONNX RT speed-up b1 "
        "| ONNX RT speed-up b32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = (
            "-" if r["method"] == "dense" else f"{r['speedup_over_flops_b1']:.2f}, {r['speedup_over_flops_b32']:.2f}"
        )
        onnx_ms = [f"{r[f'onnx_ms_b{b}']:.1f}" if f"onnx_ms_b{b}" in r else "-" for b in (1, 32)]
        onnx = [f"{r[f'onnx_speedup_b{b}']:.2f}x" if f"onnx_speedup_b{b}" in r else "-" for b in (1, 32)]
        seeds = f" ± {r['std']:.2f} ({len(r['seeds'])} seeds)" if len(r.get("seeds", [])) > 1 else ""
        lines.append(
            f"| {r['task']} | {r['method']} | {r.get('flops_target', '-')} | "
            f"{r['metric_name']} {r['metric']:.2f}{seeds} | "
            f"{r['flops_reduction_unpadded']:.2f}x | {r['flops_reduction_padded']:.2f}x | "
            f"{r['ms_b1']:.1f} | {r['ms_b32']:.1f} | {r['speedup_b1']:.2f}x | {r['speedup_b32']:.2f}x | "
            f"{ratio} | {onnx_ms[0]} | {onnx_ms[1]} | {onnx[0]} | {onnx[1]} |"
        )
    return "\n".join(lines) + "\n"


def bench_tasks(tasks: list[str], methods: list[str], args) -> None:
    for task in tasks:
        if not (ROOT / teacher_dir(task) / "toprune_teacher.json").exists():
            print(f"{task}: no teacher yet, skipped")
            continue
        merged = _merge(RESULTS / "glue_minilm.json", bench_task(task, methods, args))
        text = markdown(merged)
        (RESULTS / "glue_minilm.md").write_text(text)
        print(text)


def bench_curve(task: str, args) -> None:
    """Metric vs measured FLOPs reduction at each curve target, for ToP and the static schedule (no timing)."""
    tokenizer = toprune.load_tokenizer(ROOT / teacher_dir(task))
    data, loader = _dev(task, tokenizer)
    rows = []
    for target in CURVE_TARGETS:
        for method in CURVE_METHODS:
            folder = ROOT / run_dir(task, method, target) / "best"
            # a running job already has a best/ (its best evaluation so far): only finished runs make the curve
            if not (folder.parent / "summary.json").exists():
                print(f"{task}/{method}/{target}: not finished, skipped")
                continue
            result = evaluate(toprune.load_model(folder), loader, data)
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "target": target,
                    "metric": result["metric"],
                    "flops_reduction_unpadded": result["flops_reduction_unpadded"],
                    "flops_reduction_padded": result["flops_reduction_padded"],
                }
            )
    (RESULTS / f"glue_curve_{task}.json").write_text(json.dumps(rows, indent=1) + "\n")
    teacher = json.loads((ROOT / teacher_dir(task) / "toprune_teacher.json").read_text())["metric"]
    plot_metric_vs_flops(
        rows,
        RESULTS / f"glue_curve_{task}.png",
        f"{data.metric} (dev)",
        f"{task}: ToP vs static top-k schedule, MiniLM-L6",
        reference=teacher,
    )
    for r in rows:
        print(f"{r['method']:12s} {r['target']:5s} {r['metric']:.2f}  {r['flops_reduction_unpadded']:.2f}x")
