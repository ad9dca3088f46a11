"""Latency of the pruned runtime on the real MiniLM and real GLUE dev inputs, with a fixed (untrained) plan.

What it answers (issue: the pruned encoder):
* what our runtime costs at keep-all (our layer loop, SDPA everywhere) against the unmodified HF model;
* what token scoring costs (explicit-softmax attention at every layer that feeds a pruning decision);
* how fast a fixed plan (keep the top 50% of survivors at every layer from layer 2) really runs;
* beside all of it, the dense model exported to ONNX Runtime, the real serving competitor.

Accuracy is not measured here (the plan is fixed, not learned): see the training benchmarks for that.

    python benchmarks/latency_minilm.py --task mrpc --examples 256 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

import toprune
from toprune.benchmark import Timing, compare_latency, environment, make_batches, ort_runner, torch_runner
from toprune.export import export_onnx
from toprune.data import load_glue_split
from toprune.flops import EncoderDims, FlopsReport, batch_flops

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=toprune.DEFAULT_MODEL)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "glue"))
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--examples", type=int, default=256, help="first N dev examples (dataset order)")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep-ratio", type=float, default=0.5, help="fraction of survivors kept at each layer")
    parser.add_argument("--from-layer", type=int, default=2, help="first layer whose input is pruned")
    parser.add_argument("--padded-length", type=int, default=128, help="max length of the padded-FLOPs convention")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    tokenizer = toprune.load_tokenizer(args.model)
    dev = load_glue_split(args.data_dir, args.task, "dev").select(range(args.examples))
    texts_b = list(dev["text_b"]) if "text_b" in dev.column_names else None
    models = {name: toprune.load_model(args.model, num_labels=2) for name in ("dense", "keep_all", "scored", "plan")}
    num_layers = models["dense"].config.num_hidden_layers
    plan = toprune.PruningPlan.from_keep_ratios(
        num_layers, {layer: args.keep_ratio for layer in range(args.from_layer, num_layers)}
    )
    toprune.apply_pruning(models["keep_all"])  # our layer loop, SDPA everywhere, nothing dropped
    # + explicit-softmax scoring where a plan would need it
    toprune.apply_pruning(models["scored"]).force_scoring = True
    toprune.apply_pruning(models["plan"], plan)

    # FLOPs of the plan on exactly these inputs, both conventions
    state = toprune.pruning_state(models["plan"])
    state.record = True
    dims = EncoderDims.from_config(models["plan"].config)
    report = None
    for batch in make_batches(tokenizer, dev["text_a"], texts_b, 32):
        with torch.inference_mode():
            models["plan"](**batch)
        part = batch_flops(dims, state.last.attn_counts, args.padded_length)
        report = part if report is None else report + part
    state.record = False

    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(models["dense"], tokenizer, Path(tmp) / "dense")  # parity with PyTorch checked on export
        runners = {
            "ort": ("dense ONNX Runtime", ort_runner(Path(tmp) / "dense", args.threads)),
            "dense": ("dense HF eager (SDPA)", torch_runner(models["dense"])),
            "keep_all": ("toprune keep-all (no scoring)", torch_runner(models["keep_all"])),
            "scored": ("toprune keep-all + scoring", torch_runner(models["scored"])),
            "plan": (f"toprune plan {args.keep_ratio:.0%}/layer", torch_runner(models["plan"])),
        }
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        timed = compare_latency(runners, tokenizer, list(dev["text_a"]), texts_b, sizes, args.repeats)
    rows = [Timing(**t) for t in timed["timings"]]
    write_results(args, plan, report, rows)
    return 0


def write_results(args, plan: toprune.PruningPlan, report: FlopsReport, rows) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dense = {r.batch_size: r.ms_median for r in rows if r.name == "dense HF eager (SDPA)"}
    result = {
        "task": args.task,
        "examples": args.examples,
        "model": args.model,
        "plan": plan.to_dict(),
        "flops_reduction_unpadded": round(report.reduction_unpadded, 3),
        "flops_reduction_padded": round(report.reduction_padded, 3),
        "padded_length": args.padded_length,
        "environment": environment(args.threads),
        "repeats": args.repeats,
        "rows": [r.as_dict() | {"speedup_vs_hf_dense": round(dense[r.batch_size] / r.ms_median, 3)} for r in rows],
    }
    (out / "latency_minilm.json").write_text(json.dumps(result, indent=1) + "\n")
    env = result["environment"]
    lines = [
        f"# Latency: MiniLM-L6-H384, {args.task} dev (first {args.examples}), fixed plan",
        "",
        f"CPU: {env['cpu']}; {args.threads} threads; torch {env['torch']}, transformers {env['transformers']}, "
        f"onnxruntime {env['onnxruntime']}. Dynamic padding; 1 warm-up pass + {args.repeats} timed passes, median.",
        f"Plan: {plan.describe()}",
        f"FLOPs reduction of the plan on these inputs: **{report.reduction_unpadded:.2f}x vs dense unpadded**, "
        f"{report.reduction_padded:.2f}x vs dense padded to {args.padded_length} (paper convention).",
        "",
        "| runtime | batch | ms / batch (median) | min | max | speed-up vs HF dense |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.batch_size} | {r.ms_median:.2f} | {r.ms_min:.2f} | {r.ms_max:.2f} | "
            f"{dense[r.batch_size] / r.ms_median:.2f}x |"
        )
    (out / "latency_minilm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
