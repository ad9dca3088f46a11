"""Zero-shot probe: does merging removed tokens (``--merge``) help a fine-tuned classifier / regressor too?

The dense teacher under a static plan (keep ratio r of the survivors at every default pruning layer, the attention
or value scorer; r fitted to the FLOPs target on the training lengths), dropping vs merging, dev metric read once per
variant; no training. (CLS-reading heads: a merged token changes what CLS attends to, not the pooling.)

    python benchmarks/probes/glue_merge.py --teacher runs/stsb-teacher --task stsb --targets 1.5,2 --output x.jsonl
"""

from __future__ import annotations

import argparse
import json

import torch

import toprune
from toprune.flops import EncoderDims
from toprune.plan import PruningPlan, ScoringSpec, default_pruning_layers
from toprune.static import plan_relative_macs
from toprune.train import evaluate, make_loader, prepare_data


def fitted(dims, layers, lengths, target: float, scoring: ScoringSpec) -> PruningPlan:
    lo, hi = 0.0, 1.0
    for _ in range(30):
        r = (lo + hi) / 2
        plan = PruningPlan.from_keep_ratios(dims.num_layers, {layer: r for layer in layers}, scoring=scoring)
        lo, hi = (r, hi) if plan_relative_macs(dims, plan, lengths) <= 1 / target else (lo, r)
    return PruningPlan.from_keep_ratios(dims.num_layers, {layer: lo for layer in layers}, scoring=scoring)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--targets", default="1.5,2")
    parser.add_argument("--scorers", default="attention,value")
    parser.add_argument("--data-dir", default="../shared/data/glue")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = toprune.load_model(args.teacher), toprune.load_tokenizer(args.teacher)
    data = prepare_data(tokenizer, args.task, args.data_dir, 128)
    lengths = [len(x) for x in data.train["input_ids"]]
    dims = EncoderDims.from_config(model.config)
    layers = default_pruning_layers(dims.num_layers)
    loader = make_loader(data.dev, tokenizer, 64, False)
    with open(args.output, "a") as out:
        dense = evaluate(model, loader, data)["metric"]
        for target in [float(t) for t in args.targets.split(",")]:
            for kind in args.scorers.split(","):
                for merge in (False, True):
                    plan = fitted(dims, layers, lengths, target, ScoringSpec(kind, merge=merge))
                    toprune.apply_pruning(model, plan)
                    result = evaluate(model, loader, data)
                    toprune.remove_pruning(model)
                    row = {
                        "task": args.task,
                        "target": target,
                        "scorer": kind,
                        "merge": merge,
                        "metric": result["metric"],
                        "dense_metric": dense,
                        "flops_reduction_unpadded": result["flops_reduction_unpadded"],
                        "keep_ratio": plan.keep_ratio(layers[0]),
                    }
                    print(json.dumps(row), flush=True)
                    out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
