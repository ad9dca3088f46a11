"""Zero-shot probe: does merging removed tokens (``--merge``) help a fine-tuned classifier / regressor too?

The dense teacher under a static plan (keep ratio r of the survivors at every default pruning layer, the attention
or value scorer; r fitted to the FLOPs target on the training lengths), dropping vs merging, dev metric read once per
variant; no training. (CLS-reading heads: a merged token changes what CLS attends to, not the pooling.)

    python benchmarks/probes/glue_merge.py --teacher runs/stsb-teacher --task stsb --targets 1.5,2 --output x.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

import toprune
from toprune.flops import EncoderDims
from toprune.plan import ScoringSpec, default_pruning_layers
from toprune.train import evaluate, make_loader, prepare_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emb_zero_shot import shaped_plan  # noqa: E402  (the embedding probes' fitted geometric plan)


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
                    plan = shaped_plan(dims, dims.num_layers, layers[0], lengths, target, kind, "geometric")
                    plan = dataclasses.replace(plan, scoring=ScoringSpec(kind, merge=merge))
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
