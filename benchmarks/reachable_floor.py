"""Is the refusal of unreachable latency targets truthful? The best speed-up any plan can reach (every token but CLS
dropped after the dense layers), as `toprune prune --constraint latency` predicts it before training, against the
same CLS-only plan measured on the held-out selection slice, in the profile's backend, batch size and threads.

    python benchmarks/reachable_floor.py --task sst2 --backend onnxruntime --batch-size 1 --threads 2 \
        --output benchmarks/results/reachable_floor_sst2_ort_b1.json

The weights do not matter for either figure (the plan keeps CLS whatever the scores), so the dense model is the
packaged MiniLM with a fresh head; the profile is this machine's cache (measured on first use) or --profile.
Run it on an otherwise idle machine: the measured side is a timing.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import toprune
from toprune.costmodel import LatencyCost, cpu_name
from toprune.flops import min_relative_macs
from toprune.latency_check import measure_plan
from toprune.pretrained import DEFAULT_MODEL, resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
    parser.add_argument("--backend", default="onnxruntime", choices=["pytorch", "onnxruntime"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-train-samples", type=int, default=8000, help="as the study's SST-2 runs (0: all)")
    parser.add_argument("--examples", type=int, default=256, help="selection examples timed")
    parser.add_argument("--profile", help="a saved latency profile (default: this machine's, measured if absent)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    from transformers import AutoModelForSequenceClassification

    path = resolve_model(DEFAULT_MODEL)
    tokenizer = toprune.load_tokenizer(path)
    cfg = toprune.PruneConfig(
        task=args.task,
        data_dir=args.data_dir,
        max_train_samples=args.max_train_samples or None,
        constraint="latency",
        inference_backend=args.backend,
        inference_batch_size=args.batch_size,
        inference_threads=args.threads,
        latency_profile=args.profile,
        target="1.01x",  # reachable: the pruner is built only for its profile, layers and lengths
    )
    data = toprune.prepare_data(tokenizer, cfg.task, cfg.data_dir, cfg.max_length, cfg.max_train_samples, cfg.seed)
    labels = len(data.labels) if data.labels else 1
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=labels)
    pruner = toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, cfg, log=print)
    cost: LatencyCost = pruner.cost
    floors = [min_relative_macs(cost, pruner.layers, n, pruner.reference) for n in pruner.split_lengths]  # per split
    cls_only = toprune.PruningPlan.from_keep_ratios(cost.num_layers, {pruner.layers[0]: 0.0})
    check = measure_plan(teacher, cost, cls_only, data.selection, tokenizer, examples=args.examples)
    out = {
        "task": args.task,
        "cpu": cpu_name(),
        "profile_key": cost.key,
        "predicted_reachable_speedup": 1 / pruner.reachable_floor(),  # what the refusal says
        "predicted_reachable_by_split": {"train": 1 / floors[0], "selection": 1 / floors[-1]},
        "cls_only_on_timed_examples": {k: v for k, v in check.items() if k != "line"},
    }
    print(check["line"])
    print(f"refusal says at most {out['predicted_reachable_speedup']:.2f}x; measured CLS-only "
          f"{check['measured_speedup']:.2f}x on {check['examples']} selection examples")  # fmt: skip
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
