"""ONNX Runtime latency, dense vs ToP-pruned (both exported the same way), for the trained MRPC and SST-2 models.

    python benchmarks/onnx_bench.py            # needs runs/{mrpc,sst2}-teacher and runs/{mrpc,sst2}-top/best
                                               # (benchmarks/glue_top.sh makes them)

Each task is one `toprune bench --backend onnxruntime --int8 --json` call: dev metric and measured FLOPs of the
pruned model, then both graphs timed at batch 1 and 32 on the first 256 dev inputs (dynamic padding, 2 threads,
warm-up + 5 passes, median), plus the dynamic-INT8 graphs, reported separately. Writes
benchmarks/results/onnx.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {"mrpc": ("runs/mrpc-teacher", "runs/mrpc-top/best"), "sst2": ("runs/sst2-teacher", "runs/sst2-top/best")}


def bench(task: str, threads: int) -> dict:
    dense, pruned = MODELS[task]
    cmd = [
        "toprune",
        "bench",
        "--backend",
        "onnxruntime",
        "--int8",
        "--json",
        "--dense",
        dense,
        "--pruned",
        pruned,
        "--task",
        task,
        "--threads",
        str(threads),
    ]
    print("+", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=HERE.parent).stdout
    return json.loads(out)


def onnx_metrics(task: str, threads: int) -> dict:
    """Dev metric of the exported graphs (fp32 and INT8), served by toprune.serve.OnnxModel alone."""
    import numpy as np

    from toprune.metrics import glue_metrics
    from toprune.serve import OnnxModel
    import torch

    from toprune.train import make_loader, predictions_of, prepare_data

    out = {}
    for name, model_dir in zip(("dense", "pruned"), MODELS[task]):
        folder = HERE.parent / "runs" / "exports" / f"{task}-{name}"
        subprocess.run(
            ["toprune", "export", model_dir, "--output", str(folder), "--int8"],
            check=True,
            cwd=HERE.parent,
            capture_output=True,
        )
        for int8 in (False, True):
            served = OnnxModel(folder, threads, int8)
            data = prepare_data(
                served.tokenizer, task, str(HERE.parent.parent / "shared" / "data" / "glue"), 128, dev_only=True
            )
            preds, golds = [], []
            for batch in make_loader(data.dev, served.tokenizer, 64, False):
                golds.append(batch.pop("labels").numpy())
                logits = served(**{k: v.numpy() for k, v in batch.items()})["logits"]
                preds.append(predictions_of(torch.from_numpy(logits), data.labels is None).numpy())
            metric = glue_metrics(data.metric, np.concatenate(preds), np.concatenate(golds))[data.metric]
            out[f"{'int8' if int8 else 'onnx'}_{name}_metric"] = metric
    return out


def row_of(result: dict) -> dict:
    d, p, q = result["dense"], result["pruned"], result["int8"]
    flops = p["flops_reduction_unpadded"]
    return {
        "task": result["task"],
        "metric_name": result["metric_name"],
        "dense_metric": d["metric"],
        "pruned_metric": p["metric"],
        "flops_reduction_unpadded": flops,
        "flops_reduction_padded": p["flops_reduction_padded"],
        "dense_ms_b1": d["latency_ms_b1"],
        "pruned_ms_b1": p["latency_ms_b1"],
        "dense_ms_b32": d["latency_ms_b32"],
        "pruned_ms_b32": p["latency_ms_b32"],
        "speedup_b1": result["speedup_b1"],
        "speedup_b32": result["speedup_b32"],
        "speedup_over_flops_b1": result["speedup_b1"] / flops,
        "speedup_over_flops_b32": result["speedup_b32"] / flops,
        "int8_dense_ms_b1": q["dense_ms_b1"],
        "int8_pruned_ms_b1": q["pruned_ms_b1"],
        "int8_dense_ms_b32": q["dense_ms_b32"],
        "int8_pruned_ms_b32": q["pruned_ms_b32"],
        "protocol": result["protocol"],
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| task | metric dense → ToP | FLOPs red. unpadded (padded 128) | dense ORT b1 | ToP ORT b1 | speed-up b1 "
        "| dense ORT b32 | ToP ORT b32 | speed-up b32 | speed-up / FLOPs red. (b1, b32) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['metric_name']} {r['dense_metric']:.2f} → {r['pruned_metric']:.2f} | "
            f"{r['flops_reduction_unpadded']:.2f}x ({r['flops_reduction_padded']:.2f}x) | "
            f"{r['dense_ms_b1']:.2f} ms | {r['pruned_ms_b1']:.2f} ms | {r['speedup_b1']:.2f}x | "
            f"{r['dense_ms_b32']:.1f} ms | {r['pruned_ms_b32']:.1f} ms | {r['speedup_b32']:.2f}x | "
            f"{r['speedup_over_flops_b1']:.2f}, {r['speedup_over_flops_b32']:.2f} |"
        )
    lines += [
        "",
        "Dynamic INT8 (onnxruntime quantize_dynamic, weights QInt8), stacked on token pruning; dev metric of "
        "each graph served by `toprune.serve.OnnxModel`:",
        "",
        "| task | metric: ORT fp32 dense / ToP | metric: INT8 dense / ToP | dense INT8 b1 | ToP INT8 b1 "
        "| dense INT8 b32 | ToP INT8 b32 | ToP INT8 vs dense fp32 (b1, b32) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['onnx_dense_metric']:.2f} / {r['onnx_pruned_metric']:.2f} | "
            f"{r['int8_dense_metric']:.2f} / {r['int8_pruned_metric']:.2f} | "
            f"{r['int8_dense_ms_b1']:.2f} ms | {r['int8_pruned_ms_b1']:.2f} ms | "
            f"{r['int8_dense_ms_b32']:.1f} ms | {r['int8_pruned_ms_b32']:.1f} ms | "
            f"{r['dense_ms_b1'] / r['int8_pruned_ms_b1']:.2f}x, "
            f"{r['dense_ms_b32'] / r['int8_pruned_ms_b32']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rows = [row_of(bench(task, args.threads)) | onnx_metrics(task, args.threads) for task in args.tasks]
    out = HERE / "results"
    (out / "onnx.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "onnx.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
