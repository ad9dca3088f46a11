"""Issue 21 probe: how much faster *can* token pruning make batch 1 on short GLUE inputs, with zero overhead?

The b1 half of the speed bar asks for >= 1.3x over the dense ONNX Runtime INT8 graph. A pruner with no overhead at
all, removing tokens so that the FLOPs fall by R, costs about what the dense graph costs on the same example cut to
L / R tokens (at these lengths a layer's time is close to affine in its token count: the quadratic attention term is
small). So the dense graph timed on cut inputs is the ceiling of any token pruning, ours or anyone's, per backend:

    python benchmarks/probes/b1_ceiling.py --dense runs/frontier-s24/sst2/01-dense \
        --pruned top-1.5x=runs/frontier-s24/sst2/02-top --task sst2 --threads 2 --output results/b1_ceiling_sst2.json

Per backend (ONNX Runtime f32 / INT8, OpenVINO f32 / bf16 / INT8 where the folder has the graph): mean ms per
example at batch 1 over the first N dev examples, full length and cut to ceil(L / R) tokens (CLS kept, the rest of
the tail dropped; the content does not change a dense graph's time), and the pruned exports on the full inputs, all
in one process, variants interleaved per repeat, median of repeats. Time it with trainings paused.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))

from toprune.costmodel import cpu_name  # noqa: E402
from toprune.data import load_glue_split  # noqa: E402
from toprune.serve import INT8_FILENAME, OnnxModel  # noqa: E402

DATA = HERE.parents[2] / "shared" / "data" / "glue"
BACKENDS = [  # (label, OnnxModel options, file the folder must hold)
    ("onnxruntime f32", dict(backend="onnxruntime"), "model.onnx"),
    ("onnxruntime int8", dict(backend="onnxruntime", int8=True), INT8_FILENAME),
    ("openvino f32", dict(backend="openvino", precision="f32"), "model.onnx"),
    ("openvino bf16", dict(backend="openvino", precision="bf16"), "model.onnx"),
    ("openvino int8", dict(backend="openvino", precision="int8"), "model.ov_int8.xml"),
]


def feeds(model: OnnxModel, task: str, examples: int) -> list[dict]:
    dev = load_glue_split(DATA, task, "dev")
    cols = [c for c in ("text_a", "text_b") if c in dev.column_names and dev[0][c] is not None]
    out = []
    for row in dev.select(range(min(examples, len(dev)))):
        enc = model.tokenizer(
            *[[row[c]] for c in cols], truncation=True, max_length=model.max_length, return_tensors="np"
        )
        out.append({k: np.asarray(v, dtype=np.int64) for k, v in enc.items() if k in model.inputs})
    return out


def cut(feed: dict, reduction: float) -> dict:
    keep = max(2, math.ceil(feed["input_ids"].shape[1] / reduction))
    return {k: v[:, :keep] for k, v in feed.items()}


def ms_per_example(model: OnnxModel, batch: list[dict]) -> float:
    start = time.perf_counter()
    for feed in batch:
        model(**feed)
    return 1000 * (time.perf_counter() - start) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dense", required=True, help="the dense export folder")
    parser.add_argument("--pruned", nargs="*", default=[], help="label=export folder of pruned models")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--reductions", default="1.25,1.5,2,3")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    reductions = [float(r) for r in args.reductions.split(",")]
    pruned = dict(item.split("=", 1) for item in args.pruned)
    rows, reference = [], None
    for label, options, needed in BACKENDS:
        if not (Path(args.dense) / needed).is_file():
            print(f"{label}: no {needed} in {args.dense}, skipped")
            continue
        dense = OnnxModel(args.dense, threads=args.threads, **options)
        inputs = feeds(dense, args.task, args.examples)
        variants = {"dense": (dense, inputs)}
        variants.update({f"dense cut to L/{r:g}": (dense, [cut(f, r) for f in inputs]) for r in reductions})
        for name, folder in pruned.items():
            if (Path(folder) / needed).is_file():
                variants[name] = (OnnxModel(folder, threads=args.threads, **options), inputs)
        for model, batch in variants.values():
            ms_per_example(model, batch[:32])  # warm-up (OpenVINO compiles per shape)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, (model, batch) in variants.items():
                times[name].append(ms_per_example(model, batch))
        ms = {name: statistics.median(t) for name, t in times.items()}
        if label == "onnxruntime int8":
            reference = ms["dense"]
        rows.append(
            {"backend": label, "ms_b1": ms, "mean_tokens": float(np.mean([f["input_ids"].shape[1] for f in inputs]))}
        )
        print(label, {k: round(v, 3) for k, v in ms.items()}, flush=True)
    for row in rows:  # the bar's reference: the dense ONNX Runtime INT8 graph on the full inputs
        row["speedup_vs_dense_ort_int8"] = {k: reference / v for k, v in row["ms_b1"].items()}
        row["ceiling_in_backend"] = {k: row["ms_b1"]["dense"] / v for k, v in row["ms_b1"].items() if "cut" in k}
    out = dict(
        task=args.task,
        examples=len(inputs),
        threads=args.threads,
        repeats=args.repeats,
        reductions=reductions,
        cpu=cpu_name(),
        rows=rows,
    )
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
