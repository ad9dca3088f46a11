"""Where the speed-up falls short of the FLOPs reduction: a torch.profiler breakdown of dense vs pruned forwards.

    python benchmarks/profile_gap.py --dense runs/mrpc-teacher --pruned runs/mrpc-top/best --task mrpc
        -> results/profile_<task>.md

Both models run the same first N dev inputs (dynamic padding) at batch 1 and 32; CPU self time is summed per
operator group: matrix products (linear layers and attention products), attention softmax/SDPA, our selection
and bookkeeping ops (sort/topk, gather/scatter, index, where, cumsum, ...), and everything else (layer norm, GELU,
adds, embeddings, views). The gap between the FLOPs ratio and the time ratio is what the non-matmul groups and
the fixed per-operator cost leave.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import toprune
from toprune.benchmark import make_batches
from toprune.data import load_glue_split

HERE = Path(__file__).resolve().parent
GROUPS = {
    "matmul (linear, attention products)": ("addmm", "mm", "bmm", "matmul", "linear", "baddbmm"),
    "attention softmax / SDPA": ("softmax", "_safe_softmax", "scaled_dot_product", "_scaled_dot_product"),
    "selection and bookkeeping (ours)": (
        "sort",
        "topk",
        "argsort",
        "gather",
        "scatter",
        "index",
        "where",
        "cumsum",
        "nonzero",
        "masked_fill",
        "arange",
        "_to_copy",
        "item",
        "max",
        "all",
        "einsum",
        "mean",
        "div",
        "sum",
        "expand",
        "lt",
        "eq",
        "ne",
        "floor",
    ),
}


def group_of(name: str) -> str:
    op = name.split("::")[-1]
    for group, ops in GROUPS.items():
        if any(op == o or op.startswith(o + "_") or op == "_" + o for o in ops):
            return group
    return "other (layer norm, GELU, adds, embeddings, views)"


def profile_model(model, batches, repeats: int = 3) -> tuple[dict[str, float], int, dict[str, float]]:
    with torch.inference_mode():
        for batch in batches:  # warm-up
            model(**batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                for batch in batches:
                    model(**batch)
    totals: dict[str, float] = defaultdict(float)
    per_op, calls = {}, 0
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            ms = event.self_cpu_time_total / 1000.0 / repeats / len(batches)
            totals[group_of(event.key)] += ms
            per_op[event.key] = ms
            calls += event.count
    return dict(totals), calls // (repeats * len(batches)), per_op


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dense", required=True)
    parser.add_argument("--pruned", required=True)
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "glue"))
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer = toprune.load_tokenizer(args.dense)
    dev = load_glue_split(args.data_dir, args.task, "dev").select(range(args.examples))
    texts_b = list(dev["text_b"]) if "text_b" in dev.column_names else None
    models = {"dense": toprune.load_model(args.dense), "pruned": toprune.load_model(args.pruned)}
    lines = [
        f"# Where the time goes: {args.task}, dense vs ToP (eager PyTorch, {args.threads} threads, "
        f"first {args.examples} dev inputs)",
        "",
        "ms per batch of CPU self time by operator group (torch.profiler; profiling adds a little per call).",
        "",
    ]
    for bs in (1, 32):
        batches = make_batches(tokenizer, dev["text_a"], texts_b, bs, 128)
        result = {name: profile_model(model, batches) for name, model in models.items()}
        groups = sorted({g for totals, _, _ in result.values() for g in totals})
        lines += [
            f"## batch {bs}",
            "",
            "| operator group | dense ms | pruned ms | dense / pruned |",
            "|---|---|---|---|",
        ]
        for group in groups + ["total"]:
            d = sum(result["dense"][0].values()) if group == "total" else result["dense"][0].get(group, 0.0)
            p = sum(result["pruned"][0].values()) if group == "total" else result["pruned"][0].get(group, 0.0)
            lines.append(f"| {group} | {d:.2f} | {p:.2f} | {d / p if p else float('inf'):.2f}x |")
        lines += [
            "",
            f"aten calls per forward (nested calls included): dense {result['dense'][1]}, pruned {result['pruned'][1]}",
            "",
            "Largest operators (ms per batch, self time):",
            "",
            "| operator | dense ms | pruned ms |",
            "|---|---|---|",
        ]
        top = sorted(result["pruned"][2], key=result["pruned"][2].get, reverse=True)[:12]
        lines += [f"| {op} | {result['dense'][2].get(op, 0.0):.2f} | {result['pruned'][2][op]:.2f} |" for op in top]
        lines.append("")
    out = HERE / "results" / f"profile_{args.task}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
