"""Issue 23 probe: the token floor (``PruningPlan.min_tokens``) on a pruned embedding model, no training.

Short texts (STS-B sentences, retrieval questions: ~15 tokens) cost little to encode and lose the most per token
removed; passages (~150 tokens) are where the FLOPs go. A floor leaves inputs under N tokens whole at every pruning
layer. The floor is chosen before any evaluation, on training data only: the largest multiple of 8 at which the
model still meets ``--corpus-target`` on the paragraphs of the SQuAD *training* articles. Then STS-B dev and the
held-out retrieval are read once, for the model without and with that floor (FLOPs on each text set reported):

    python benchmarks/probes/emb_floor.py --model runs/emb-once47v-merge-ft/best --corpus-target 2 \
        --output benchmarks/results/embeddings_floor.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))

import toprune  # noqa: E402
from toprune.embedding import read_pooling  # noqa: E402
from toprune.embedding_eval import (  # noqa: E402
    encode_with_flops,
    retrieval_metrics,
    retrieval_task,
    spearman_of,
    squad_training_texts,
    stsb_dev,
)
from toprune.flops import EncoderDims  # noqa: E402
from toprune.plan import PruningPlan  # noqa: E402
from toprune.static import plan_relative_macs  # noqa: E402

DATA = HERE.parents[2] / "shared" / "data"
SQUAD = DATA / "squad" / "dev-v1.1.json"


def training_paragraph_lengths(tokenizer, max_length: int) -> list[int]:
    """Token lengths of the training articles' paragraphs (their questions left out)."""
    paragraphs = set(retrieval_task(SQUAD)[0])
    texts = [text for text in squad_training_texts(SQUAD) if text in paragraphs]
    return [min(max_length, len(ids)) for ids in tokenizer(texts)["input_ids"]]


def with_floor(plan: PruningPlan, floor: int) -> PruningPlan:
    return dataclasses.replace(plan, min_tokens=floor)


def choose_floor(plan, dims, lengths, target: float, step: int = 8, limit: int = 256) -> tuple[int, float]:
    """The largest floor (multiple of ``step``) whose reduction on ``lengths`` still meets ``target``."""
    best = (0, 1 / plan_relative_macs(dims, plan, lengths))
    for floor in range(step, limit + 1, step):
        reduction = 1 / plan_relative_macs(dims, with_floor(plan, floor), lengths)
        if reduction < target:
            break
        best = (floor, reduction)
    return best


def evaluate(model, tokenizer, pooling, max_length: int) -> dict:
    a, b, gold = stsb_dev(DATA / "glue")
    left, flops_a = encode_with_flops(model, tokenizer, a, pooling, max_length=max_length)
    right, flops_b = encode_with_flops(model, tokenizer, b, pooling, max_length=max_length)
    paragraphs, questions, index, _ = retrieval_task(SQUAD)
    docs, flops_docs = encode_with_flops(model, tokenizer, paragraphs, pooling, max_length=max_length)
    queries, flops_q = encode_with_flops(model, tokenizer, questions, pooling, max_length=max_length)
    return {
        "stsb_spearman": spearman_of(left, right, gold),
        **retrieval_metrics(queries, docs, index),
        "flops_reduction_unpadded": {
            "passages": flops_docs,
            "questions": flops_q,
            "stsb": None if flops_a is None else (flops_a + flops_b) / 2,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", required=True, help="a pruned embedding model folder (toprune prune --task embedding)"
    )
    parser.add_argument("--corpus-target", type=float, default=2.0)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = toprune.load_model(args.model, "AutoModel")
    tokenizer = toprune.load_tokenizer(args.model)
    pooling = read_pooling(args.model, "survivors")
    plan = PruningPlan.load(args.model, num_layers=model.config.num_hidden_layers)
    dims = EncoderDims.from_config(model.config)
    lengths = training_paragraph_lengths(tokenizer, args.max_length)
    floor, train_reduction = choose_floor(plan, dims, lengths, args.corpus_target)
    print(f"floor {floor}: {train_reduction:.3f}x on {len(lengths)} training-article paragraphs", flush=True)
    rows = []
    for name, chosen in (("no floor", with_floor(plan, 0)), (f"floor {floor}", with_floor(plan, floor))):
        toprune.apply_pruning(model, chosen)
        row = {"plan": name, "min_tokens": chosen.min_tokens, **evaluate(model, tokenizer, pooling, args.max_length)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    toprune.remove_pruning(model)
    dense = {"plan": "the same weights, unpruned", **evaluate(model, tokenizer, pooling, args.max_length)}
    print(json.dumps(dense), flush=True)
    out = {
        "model": args.model,
        "floor_rule": f"largest multiple of 8 meeting {args.corpus_target}x on the training articles' paragraphs",
        "saved_min_tokens": plan.min_tokens,  # the floor the model was fine-tuned with (0: none)
        "floor": floor,
        "training_paragraphs_reduction": train_reduction,
        "training_paragraph_tokens_median": float(np.median(lengths)),
        "rows": rows + [dense],
    }
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
