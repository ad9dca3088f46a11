"""How right is the latency cost model? (issue 22) -> results/latency_costmodel.json

For each backend (eager PyTorch, ONNX Runtime) and batch size: ``toprune.profile.profile`` fits the cost model on
this machine, then its prediction is compared with measured whole-model latency of random plans (not the
calibration's), two ways:
* uniform: random inputs of one random length per plan (``latency_check.check_predictions``);
* real: the first ``--examples`` dev examples of ``--task``, dynamically padded batches, the project's latency
  protocol, each batch predicted from its own lengths (``latency_check.check_real_batches``); ``--learned`` adds
  the plans of pruned model folders.
The headline is the median |predicted - measured| / measured per (backend, batch size, inputs). ``--data-lengths``:
the profile is fitted, and the uniform inputs drawn, at the task's training lengths, as ``prune --constraint
latency`` profiles. ONNX Runtime graphs (one export per plan) are kept in ``--workdir`` and reused across batch sizes
and reruns. ``--resume``
skips the (backend, batch size) entries already in the output file. Timings need a quiet machine.

    python benchmarks/latency_costmodel.py --threads 2 --plans 12
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import toprune
from toprune.benchmark import environment
from toprune.latency_check import EXAMPLES, check_predictions, check_real_batches, median_speedup_error, task_batches
from toprune.plan import PruningPlan
from toprune.profile import (
    BACKENDS,
    CALIBRATION,
    Timer,
    check_plans,
    profile,
    timed_length,
    training_lengths,
)

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=toprune.DEFAULT_MODEL, help="model folder or 'minilm' (its shape counts)")
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "glue"))
    parser.add_argument("--examples", type=int, default=EXAMPLES, help="first N dev examples (dataset order)")
    parser.add_argument("--max-length", type=int, default=128, help="truncation of the real inputs")
    parser.add_argument("--max-tokens", type=int, default=128, help="longest uniform input profiled and checked")
    parser.add_argument(
        "--data-lengths",
        action="store_true",
        help="profile and check the uniform inputs at --task's training lengths (what `prune --constraint latency` "
        "does), not uniform 8..--max-tokens",
    )
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plans", type=int, default=12, help="random plans checked (seed 1; calibration: seed 0)")
    parser.add_argument(
        "--calibration-plans",
        type=int,
        help="random plans the fit is calibrated on (default: the backend's, toprune.profile.CALIBRATION)",
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per uniform timing (median)")
    parser.add_argument("--passes", type=int, default=5, help="timed passes over the real batches (median)")
    parser.add_argument(
        "--per-batch",
        action="store_true",
        help="also time each real batch alone (median): tells a wrong model from a busy machine",
    )
    parser.add_argument("--learned", nargs="*", default=[], help="pruned model folders whose plans are checked too")
    parser.add_argument("--workdir", default="runs/latency_costmodel", help="exported ONNX graphs, reused")
    parser.add_argument("--output", default=str(HERE / "results" / "latency_costmodel.json"))
    parser.add_argument("--resume", action="store_true", help="keep the entries already in --output")
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="only export the ONNX graphs every timing will need into --workdir (minutes; the "
        "machine need not be quiet), then stop",
    )
    return parser.parse_args(argv)


def summary_rows(results: dict) -> list[dict]:
    rows = []
    for backend, by_batch in results.items():
        for bs, entry in by_batch.items():
            rows.append(
                {
                    "backend": backend,
                    "batch_size": int(bs),
                    "uniform_median_abs_error": entry["uniform"]["median_abs_error"],
                    "real_median_abs_error": entry["real"]["median_abs_error"],
                    "real_learned_median_abs_error": entry["real"]["median_abs_error_learned"],
                    "real_dense_error": entry["real"]["dense_error"],
                    "real_speedup_median_abs_error": median_speedup_error(entry["real"]["plans"], "random"),
                    "real_speedup_median_abs_error_learned": median_speedup_error(entry["real"]["plans"], "learned"),
                    "real_per_batch_median_abs_error": entry["real"].get("median_abs_error_per_batch"),
                }
            )
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output)
    previous = json.loads(out.read_text()) if args.resume and out.is_file() else {}
    results = previous.get("results", {}) if previous.get("version") == 2 else {}
    model, tokenizer = toprune.load_model(args.model), toprune.load_tokenizer(args.model)
    learned = {Path(f).as_posix(): PruningPlan.load(f, model.config.num_hidden_layers) for f in args.learned}
    workdir = Path(args.workdir)
    lengths = training_lengths(args.model, args.task, args.data_dir) if args.data_lengths else None
    max_tokens = timed_length(model, lengths, args.max_tokens)
    if args.prepare:
        return prepare(model, args, learned, workdir)
    for backend in args.backends.split(","):
        for bs in [int(b) for b in args.batch_sizes.split(",")]:
            if str(bs) in results.get(backend, {}):
                print(f"{backend} b{bs}: done already (--resume)", file=sys.stderr)
                continue
            start = time.time()
            cost = profile(
                model,
                backend,
                bs,
                args.threads,
                max_tokens=max_tokens,
                repeats=args.repeats,
                plans=args.calibration_plans,
                workdir=workdir,
                lengths=lengths,
            )
            uniform = check_predictions(
                model, cost, args.plans, max_tokens, args.repeats, workdir=workdir, lengths=lengths
            )
            batches = task_batches(tokenizer, args.task, args.data_dir, bs, args.examples, args.max_length)
            real = check_real_batches(
                model, cost, batches, args.plans, learned, args.passes, workdir=workdir, per_batch=args.per_batch
            )
            results.setdefault(backend, {})[str(bs)] = {
                "cost_model": {k: v for k, v in cost.__dict__.items() if k != "key"},
                "key": cost.key,
                "uniform": uniform,
                "real": real,
                "seconds": round(time.time() - start, 1),
            }
            print(
                f"{backend} b{bs}: median abs error uniform {uniform['median_abs_error']:.1%}, real batches "
                f"{real['median_abs_error']:.1%} ({time.time() - start:.0f} s)",
                file=sys.stderr,
            )
            write(out, args, results)
    write(out, args, results)
    for row in summary_rows(results):
        print(json.dumps(row))
    return 0


def prepare(model, args: argparse.Namespace, learned: dict, workdir: Path) -> int:
    """Export the dense graph, the calibration plans and the check plans (the same for every batch size)."""
    layers = int(model.config.num_hidden_layers)
    plans = [
        None,
        *check_plans(layers, args.calibration_plans or CALIBRATION["onnxruntime"][0], seed=0),
        *check_plans(layers, args.plans, seed=1),
        *learned.values(),
    ]
    with Timer(model, "onnxruntime", args.threads, workdir) as timer:
        for plan in plans:
            print(f"exported: {timer.export(plan)}", file=sys.stderr, flush=True)
    return 0


def write(out: Path, args: argparse.Namespace, results: dict) -> None:
    errors = [
        e
        for row in summary_rows(results)
        for e in (row["uniform_median_abs_error"], row["real_median_abs_error"])
        if e is not None
    ]
    doc = {
        "version": 2,
        "what": f"toprune.profile cost model vs measured whole-model latency of {args.plans} random plans (seed 1, "
        "not the calibration's): uniform inputs of random lengths "
        f"({f'drawn from {args.task} training lengths' if args.data_lengths else f'8..{args.max_tokens} tokens'}; "
        "the profile is fitted on the same kind), and the first "
        f"{args.examples} {args.task} dev examples in dynamically padded batches (median of {args.passes} "
        "passes, ms per batch)",
        "model": args.model,
        "task": args.task,
        "data_lengths": args.data_lengths,
        "threads": args.threads,
        "environment": environment(args.threads),
        "worst_median_abs_error": max(errors) if errors else None,
        "summary": summary_rows(results),
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
