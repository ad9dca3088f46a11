"""Does ONNX Runtime charge a pruned graph for a new input shape at every call? (issue 22, the b1 cost model)

The cost model is calibrated on one input repeated (steady shapes); served batch-1 traffic changes length at every
call. On the AMD EPYC VM its b1 ONNX Runtime predictions were within 7% on steady inputs and 15-30% under on real
STS-B pairs for pruned plans (7% for the dense graph). This times the dense graph and learned plans' graphs on the
first 256 STS-B dev pairs at batch 1, (a) in dataset order (the length changes every call), (b) each pair run
several times in a row and its last run timed (steady), with ONNX Runtime's memory pattern on (default) and off.

    python benchmarks/probes/ort_shape_change.py --model runs/stsb-teacher --plans runs/latency_target/X/best ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import toprune
from toprune.costmodel import cpu_name
from toprune.latency_check import task_batches
from toprune.plan import PruningPlan
from toprune.profile import Timer


def session(path: Path, threads: int, mem_pattern: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = mem_pattern
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timed(sess, feeds: list[dict], steady: int, passes: int = 3) -> float:
    """Mean ms per call: dataset order (steady=0) or each input run ``steady`` times, the last one timed."""
    for f in feeds:
        sess.run(None, f)
    samples = []
    for _ in range(passes):
        total = 0.0
        for f in feeds:
            for _ in range(steady):
                sess.run(None, f)
            start = time.perf_counter()
            sess.run(None, f)
            total += time.perf_counter() - start
        samples.append(total * 1000 / len(feeds))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--plans", nargs="*", default=[])
    parser.add_argument("--task", default="stsb")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    parser.add_argument("--workdir", default="runs/latency_costmodel_stsb")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--output", default=str(Path(__file__).resolve().parents[1] / "results" / "ort_shape_change.json")
    )
    args = parser.parse_args()
    model, tokenizer = toprune.load_model(args.model), toprune.load_tokenizer(args.model)
    batches = task_batches(tokenizer, args.task, args.data_dir, 1)
    layers = int(model.config.num_hidden_layers)
    graphs = {"dense": None, **{p: PruningPlan.load(p, layers) for p in args.plans}}
    rows = []
    with Timer(model, "onnxruntime", args.threads, args.workdir) as timer:
        for name, plan in graphs.items():
            path = timer.export(plan) / "model.onnx"
            for mem_pattern in (True, False):
                sess = session(path, args.threads, mem_pattern)
                wanted = {i.name for i in sess.get_inputs()}
                feeds = [{k: v.numpy() for k, v in b.items() if k in wanted} for b in batches]
                row = {"graph": name, "mem_pattern": mem_pattern}
                row["ms_dataset_order"] = timed(sess, feeds, 0)
                row["ms_steady"] = timed(sess, feeds, 3)
                row["shape_change_cost"] = row["ms_dataset_order"] / row["ms_steady"] - 1
                print(json.dumps(row), flush=True)
                rows.append(row)
    doc = {"what": __doc__.split("\n\n")[0], "cpu": cpu_name(), "threads": args.threads,
           "examples": len(batches), "rows": rows}  # fmt: skip
    Path(args.output).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
