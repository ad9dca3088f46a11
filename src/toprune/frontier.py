"""``toprune frontier``: accuracy against measured latency, for every model a CPU user could ship.

For the dense teacher and each pruned model (ToP or the static schedule, at any targets), on one task:

* the dev metric of *each graph that is timed* (PyTorch, ONNX Runtime fp32/INT8, OpenVINO f32/bf16/INT8): a
  quantised or reduced-precision graph is scored as itself, never credited with the fp32 metric;
* latency at each batch size with the project's protocol (:mod:`toprune.benchmark`: first N dev examples, dynamic
  padding, N threads, warm-up + timed passes, median), every row timed at the end with the passes of all rows
  interleaved, so a slow spell of a shared machine touches every row alike;
* the INT8 graph of ONNX Runtime is the variant ``toprune export --int8`` keeps (chosen on the held-out training
  slice); OpenVINO INT8 is NNCF post-training quantisation calibrated on training texts.

Output: ``frontier_<task>.json`` (rows ``{model, target, backend, int8, precision, metric, ms_b1, ms_b32, ...}``,
environment, protocol), a Markdown table beside it and a PNG (metric vs ms, one panel per batch size; points within
``--within`` of the teacher filled). The paper's convention, the speed-up against the dense PyTorch model padded to
a fixed length, is a separate, labelled column (``paper_speedup_vs_dense_padded_b*``): it flatters every row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

from .errors import ToPruneError
from .frontier_verdict import verdict, verdict_markdown

WITHIN = 1.0  # points of the metric below the teacher that still count as "keeps the accuracy"
OPENVINO_PRECISIONS = ("f32", "bf16", "int8")


def add_arguments(p) -> None:
    """The options of ``toprune frontier`` (registered in cli.py)."""
    from .cli import int_list, positive_int
    from .quantize import VARIANTS

    p.add_argument("--task", required=True, help="GLUE task (dev metric, timing inputs, INT8 calibration)")
    p.add_argument("--dense", required=True, help="the dense teacher folder")
    p.add_argument("--pruned", nargs="+", required=True, help="pruned model folders (ToP or static, any targets)")
    p.add_argument("--data-dir", help="GLUE folder (default: ../shared/data/glue when present)")
    p.add_argument("--max-length", type=positive_int, help="tokens per input (default: 128)")
    p.add_argument(
        "--padded-length",
        type=positive_int,
        help="fixed length of the paper's convention column (default: --max-length)",
    )
    p.add_argument("--batch-sizes", type=int_list, default=[1, 32], help="comma-separated (default: 1,32)")
    p.add_argument("--threads", type=positive_int, default=2, help="intra-op threads of every backend")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed passes; the median is reported")
    p.add_argument("--examples", type=positive_int, default=256, help="first N dev examples are timed")
    p.add_argument(
        "--openvino",
        default=",".join(OPENVINO_PRECISIONS),
        help="OpenVINO precisions to run, comma-separated, or 'none' (default: %(default)s)",
    )
    p.add_argument(
        "--int8-variant",
        default="auto",
        choices=["auto", *VARIANTS],
        help="ONNX Runtime INT8: auto (the variant `toprune export --int8` keeps) or one variant",
    )
    p.add_argument("--workdir", default="runs/frontier", help="export folders are kept here")
    p.add_argument("--output", help="json path (default: benchmarks/results/frontier_<task>.json)")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")


def _precisions(text: str) -> list[str]:
    if text.strip().lower() == "none":
        return []
    wanted = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in wanted if p not in OPENVINO_PRECISIONS]
    if bad:
        raise ToPruneError(f"--openvino {bad[0]!r}: choose from {', '.join(OPENVINO_PRECISIONS)} or none")
    return wanted


def model_kind(folder: str | Path) -> tuple[str, str | None, bool]:
    """("top" | "static" | "random", target, INT8-aware fine-tuned) of a pruned folder: its plan's meta, else its
    run's summary.json."""
    from .plan import PruningPlan

    meta = PruningPlan.load(folder).meta
    method, target = meta.get("method"), meta.get("target")
    summary = Path(folder).parent / "summary.json"
    if (method is None or target is None) and summary.is_file():
        config = json.loads(summary.read_text()).get("config", {})
        method, target = method or config.get("method"), target or config.get("target")
    return method or "top", target, bool(meta.get("qat"))


def padded_batches(tokenizer, texts_a, texts_b, batch_size: int, length: int) -> list[dict]:
    """The paper's reference inputs: every example padded to ``length`` (no dynamic padding)."""
    pairs = (list(texts_a),) if texts_b is None else (list(texts_a), list(texts_b))
    encoded = tokenizer(*pairs, truncation=True, max_length=length, padding="max_length", return_tensors="pt")
    return [{k: v[i : i + batch_size] for k, v in encoded.items()} for i in range(0, len(texts_a), batch_size)]


@dataclass
class Row:
    """One served graph: its row of the result (metric, backend, ...; ``ms_b*`` added when timed) and its runner."""

    fields: dict
    label: str
    run: Callable


class Frontier:
    def __init__(self, args, data_dir) -> None:
        from .pretrained import load_tokenizer
        from .quantize import int8_data

        self.args, self.precisions = args, _precisions(args.openvino)
        from .plan import PLAN_FILENAME

        for folder in (args.dense, *args.pruned):  # before anything is loaded or timed
            if not Path(folder).is_dir():
                raise ToPruneError(f"{folder} is not a model folder")
        if (Path(args.dense) / PLAN_FILENAME).is_file():
            raise ToPruneError(f"--dense {args.dense} is a pruned model; give the dense teacher")
        for folder in args.pruned:
            if not (Path(folder) / PLAN_FILENAME).is_file():
                raise ToPruneError(f"--pruned {folder} is not a pruned model (no {PLAN_FILENAME})")
        self.tokenizer = load_tokenizer(args.dense)
        self.data, why = int8_data(self.tokenizer, args.task, {"max_length": args.max_length}, data_dir)
        if self.data is None:
            raise ToPruneError(f"--task {args.task}: {why}")
        from .openvino_backend import CALIBRATION_EXAMPLES
        from .quantize import calibration_feeds
        from .train import make_loader

        self.loader = make_loader(self.data.dev, self.tokenizer, 64, False)
        self.feeds = calibration_feeds(self.data.train, self.tokenizer, CALIBRATION_EXAMPLES)
        self.dev_feeds = [{k: v.numpy() for k, v in batch.items() if k != "labels"} for batch in self.loader]
        dev = self.data.dev_raw.select(range(min(args.examples, len(self.data.dev_raw))))
        self.texts = (list(dev["text_a"]), list(dev["text_b"]) if "text_b" in dev.column_names else None)
        self.workdir = Path(args.workdir) / self.data.name
        self.served: list[Row] = []
        self.paper_runner: tuple | None = None  # (label, run): the dense model, set when its folder is measured
        self.paper_reference: dict[str, float] = {}

    @property
    def rows(self) -> list[dict]:
        return [row.fields for row in self.served]

    def batches(self, batch_size: int) -> list[dict]:
        from .benchmark import make_batches

        return make_batches(self.tokenizer, *self.texts, batch_size, self.args.max_length)

    def metric_of_runner(self, run) -> float:
        from .quantize import metric_of

        import numpy as np

        logits, golds = [], []
        for batch in self.loader:
            golds.append(batch["labels"].numpy())
            logits.append(np.asarray(run({k: v for k, v in batch.items() if k != "labels"})))
        return metric_of(self.data, np.concatenate(logits), np.concatenate(golds))

    def time_rows(self) -> None:
        """Every row's ms per batch, all rows timed together, their passes interleaved (pass 1 of each, then pass 2
        of each): on a shared machine whose speed drifts, a slow spell then touches every row alike, so the ratios
        between rows (the frontier's verdict) hold; timed one row after another, the order of timing moved them
        (benchmarks/README.md section 22). The price: every row's model and sessions stay loaded until now. The
        paper's reference (other, padded inputs) is timed right after each batch size's rows."""
        from .benchmark import time_batches, time_interleaved

        runners = {i: (row.label, row.run) for i, row in enumerate(self.served)}  # by index: labels repeat
        for bs in self.args.batch_sizes:
            timings = time_interleaved(runners, self.batches(bs), self.args.repeats)
            for i, row in enumerate(self.served):
                row.fields[f"ms_b{bs}"] = timings[i].ms_median
            label, run = self.paper_runner
            batches = padded_batches(self.tokenizer, *self.texts, bs, self.args.padded_length)
            self.paper_reference[f"ms_b{bs}"] = time_batches(run, batches, label, self.args.repeats).ms_median

    def add(self, base: dict, backend: str, int8: bool, precision: str, metric: float, run, **extra) -> None:
        label = f"{base['model']} {base['target'] or ''} {backend} {precision}".replace("  ", " ")
        fields = {**base, "backend": backend, "int8": int8, "precision": precision, "metric": metric, **extra}
        self.served.append(Row(fields, label, run))  # timed with every other row at the end (time_rows)

    def measure(self, folder: str, base: dict, pruned: bool) -> None:
        """Every backend's rows of one model folder."""
        from .benchmark import openvino_runner, ort_runner, torch_runner
        from .export import export_folder
        from .openvino_backend import parity, quantize_openvino
        from .serve import ONNX_FILENAME, OPENVINO_F32_TOLERANCE, make_session
        from .pretrained import load_model
        from .runtime import pruning_state
        from .train import check_head, evaluate

        model = load_model(folder)
        check_head(model, folder, self.data, self.args.max_length)
        if (pruning_state(model) is not None) != pruned:
            raise ToPruneError(
                f"{folder} is {'not ' if pruned else ''}a pruned model; give the dense teacher as "
                f"--dense and pruned models (with toprune_plan.json) as --pruned"
            )
        result = evaluate(model, self.loader, self.data, self.args.padded_length)
        flops = {k: result[k] for k in ("flops_reduction_unpadded", "flops_reduction_padded") if k in result}
        base = {**base, "folder": str(folder), **flops}
        self.add(base, "pytorch", False, "f32", result["metric"], torch_runner(model))
        if not pruned:  # the paper's reference: the dense model padded to a fixed length, PyTorch eager (time_rows)
            self.paper_runner = (f"dense padded to {self.args.padded_length}", torch_runner(model))
        # one folder per model given (two runs may share kind and target: seeds, schedules)
        export = self.workdir / f"{len({r['folder'] for r in self.rows}):02d}-{base['model']}"
        export_folder(folder, export, int8=True, variant=self.args.int8_variant, data=self.data)
        report = json.loads((export / "toprune_onnx.json").read_text())["int8"]
        threads = self.args.threads
        self.add(base, "onnxruntime", False, "f32", report["dev_metric_fp32"], ort_runner(export, threads))
        self.add(
            base,
            "onnxruntime",
            True,
            "int8",
            report["dev_metric_int8"],
            ort_runner(export, threads, True),
            int8_variant=report["variant"],
        )
        if any(p.startswith("int8") for p in self.precisions):
            quantize_openvino(export, self.feeds)
        reference = make_session(export / ONNX_FILENAME, threads)
        for precision in self.precisions:
            run = openvino_runner(export, threads, precision)
            check = parity(run.session, reference, self.dev_feeds, ["logits"])
            if precision == "f32" and check["max_abs_diff"] > OPENVINO_F32_TOLERANCE:
                raise ToPruneError(
                    f"OpenVINO f32 disagrees with ONNX Runtime on {folder} (max abs diff "
                    f"{check['max_abs_diff']:.2e} on dev); not timed"
                )
            self.add(
                base,
                "openvino",
                precision.startswith("int8"),
                precision,
                self.metric_of_runner(run),
                run,
                parity_vs_onnxruntime_f32=check,
            )

    def run(self) -> dict:
        from tqdm.auto import tqdm

        from .benchmark import environment

        jobs = [(self.args.dense, {"model": "dense", "target": None}, False)]
        for folder in self.args.pruned:
            kind, target, qat = model_kind(folder)
            jobs.append((folder, {"model": kind, "target": target, "qat": qat}, True))
        for folder, base, pruned in tqdm(jobs, desc="frontier: models"):
            self.measure(folder, base, pruned)
        self.time_rows()
        teacher = self.rows[0]["metric"]
        for row in self.rows:
            row["within_teacher"] = row["metric"] >= teacher - WITHIN
            for bs in self.args.batch_sizes:
                row[f"paper_speedup_vs_dense_padded_b{bs}"] = self.paper_reference[f"ms_b{bs}"] / row[f"ms_b{bs}"]
        return {
            "task": self.data.name,
            "metric": self.data.metric,
            "teacher_metric": teacher,
            "within": WITHIN,
            "rows": self.rows,
            "verdict": verdict(self.rows, list(self.args.batch_sizes)),
            "environment": environment(self.args.threads),
            "protocol": {
                "examples_timed": len(self.texts[0]),
                "batch_sizes": list(self.args.batch_sizes),
                "padding": "dynamic (per batch)",
                "threads": self.args.threads,
                "repeats": self.args.repeats,
                "statistic": "median of passes, every row's passes interleaved",
                "int8_selected_on": self.data.selection_info.describe(),
            },
            "paper_convention": {
                "reference": f"dense PyTorch eager (SDPA) padded to {self.args.padded_length} tokens",
                **self.paper_reference,
                "note": "the paper's speed-up convention; the honest comparison is ms_b*",
            },
        }


def markdown(result: dict) -> str:
    sizes = result["protocol"]["batch_sizes"]
    head = (
        "| model | target | backend | precision | "
        + result["metric"]
        + " | "
        + " | ".join(f"ms b{b}" for b in sizes)
        + " | "
        + " | ".join(f"paper conv. speed-up b{b}" for b in sizes)
        + " |"
    )
    lines = [head, "|" + "---|" * (5 + 2 * len(sizes))]
    for r in result["rows"]:
        mark = " *" if r["within_teacher"] else ""
        precision = r["precision"] + (f" ({r['int8_variant']})" if r.get("int8_variant") else "")
        lines.append(
            f"| {r['model']}{' +QAT' if r.get('qat') else ''} | {r['target'] or '-'} | {r['backend']} | {precision} | "
            f"{r['metric']:.2f}{mark} | "
            + " | ".join(f"{r[f'ms_b{b}']:.2f}" for b in sizes)
            + " | "
            + " | ".join(f"{r[f'paper_speedup_vs_dense_padded_b{b}']:.2f}x" for b in sizes)
            + " |"
        )
    lines.append(
        f"\n\\* within {result['within']:g} point of the teacher ({result['teacher_metric']:.2f}). Paper "
        f"convention: against {result['paper_convention']['reference']}, not the honest comparison."
    )
    summary = verdict(result["rows"], sizes)  # from the rows, so that a file written before it existed renders too
    return "\n".join(lines) + "\n" + verdict_markdown(summary, result["within"])


def plot(result: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = result["protocol"]["batch_sizes"]
    markers = {"pytorch": "o", "onnxruntime": "s", "openvino": "^"}
    colors = {"dense": "tab:gray", "top": "tab:blue", "static": "tab:orange", "random": "tab:red"}
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, bs in zip(axes[0], sizes):
        for r in result["rows"]:
            color = colors.get(r["model"], "tab:green")
            ax.scatter(
                r[f"ms_b{bs}"],
                r["metric"],
                marker=markers[r["backend"]],
                s=60 if r["int8"] else 40,
                facecolors=color if r["within_teacher"] else "none",
                edgecolors=color,
            )
            ax.annotate(
                f"{r['target'] or ''}{' QAT' if r.get('qat') else ''} {r['precision']}".strip(),
                (r[f"ms_b{bs}"], r["metric"]),
                fontsize=6,
                xytext=(3, 2),
                textcoords="offset points",
            )
        ax.axhline(
            result["teacher_metric"] - result["within"],
            color="k",
            lw=0.8,
            ls=":",
            label=f"teacher - {result['within']:g}",
        )
        ax.set_xscale("log")
        ax.set_xlabel(f"ms per batch of {bs} (median)")
        ax.set_ylabel(f"dev {result['metric']}")
        ax.set_title(f"{result['task']}: batch {bs}")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker=m, ls="", color="k", label=b) for b, m in markers.items()]
    handles += [
        plt.Line2D([], [], marker="o", ls="", color=c, label=k)
        for k, c in colors.items()
        if any(r["model"] == k for r in result["rows"])
    ]
    axes[0][0].legend(handles=handles, fontsize=7, title="filled: within teacher", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def cmd_frontier(args, data_dir) -> dict:
    import torch

    from .safeio import atomic_write_text, check_writable

    output = Path(args.output or Path("benchmarks") / "results" / f"frontier_{args.task}.json")
    if output.is_dir():
        raise ToPruneError(f"--output {output} is a folder; give a .json file path")
    check_writable(output.parent)
    torch.set_num_threads(args.threads)
    result = Frontier(args, data_dir).run()
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, json.dumps(result, indent=1) + "\n")
    atomic_write_text(output.with_suffix(".md"), markdown(result))
    plot(result, output.with_suffix(".png"))
    if not args.json:
        print(markdown(result))
        print(f"wrote {output}, {output.with_suffix('.md').name}, {output.with_suffix('.png').name}")
    return result if args.json else None
