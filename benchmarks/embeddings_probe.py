"""ZERO-SHOT probe (no training): the real all-MiniLM-L6-v2 with a static top-k plan at a FLOPs target, judged on
STS-B dev (Spearman of cosine) and SQuAD v1.1 dev passage retrieval (held-out articles' questions against all
paragraphs), beside the dense model, with both ways of pooling a pruned model (restored states of pruned tokens,
or the survivors only; ``--dense-queries``: questions encoded dense, passages pruned). It shows where an
untrained plan starts, not what ToP training reaches.

The plan is the static schedule (one keep ratio at every pruning layer, most-attended tokens kept) meeting the
target on the SQuAD paragraphs' token lengths (corpus encoding is the use case); the measured reduction on each
evaluation's own inputs is reported beside it.

    python benchmarks/embeddings_probe.py --targets 2x [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import toprune
from toprune.embedding import read_pooling
from toprune.embedding_eval import _squad, squad_retrieval, stsb_spearman
from toprune.flops import EncoderDims, parse_target
from toprune.plan import default_pruning_layers
from toprune.pretrained import resolve_model
from toprune.static import static_plan

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="2x", help="comma-separated FLOPs targets, e.g. 1.5x,2x,3x")
    parser.add_argument("--glue-dir", default=str(DATA / "glue"))
    parser.add_argument("--squad-file", default=str(DATA / "squad" / "dev-v1.1.json"))
    parser.add_argument("--max-length", type=int, default=256, help="the model's sentence-transformers limit")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--dense-queries",
        action="store_true",
        help="retrieval only: questions encoded by the dense model, passages by the pruned one",
    )
    parser.add_argument("--output", default=str(HERE / "results" / "embeddings_probe.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = resolve_model("minilm")
    model = toprune.load_model(folder, "AutoModel")
    tokenizer = toprune.load_tokenizer(folder)
    dims = EncoderDims.from_config(model.config)
    _, paragraphs, _ = _squad(args.squad_file)
    lengths = [len(ids) for ids in tokenizer(paragraphs, truncation=True, max_length=args.max_length)["input_ids"]]

    dense = toprune.load_model(folder, "AutoModel") if args.dense_queries else None

    def judge(method, target, tokens, plan):
        toprune.apply_pruning(model, plan)
        pooling = read_pooling(folder, tokens)
        started = time.perf_counter()
        row = {
            "method": method,
            "target": target,
            "pooling_tokens": tokens,
            "zero_shot": True,
            "plan": plan.describe() if plan else "dense",
            "queries": "dense" if dense else "same model",
        }
        if not dense:  # with dense queries only retrieval changes
            row.update(stsb_spearman(model, tokenizer, pooling, args.glue_dir, args.max_length))
        row.update(squad_retrieval(model, tokenizer, pooling, args.squad_file, args.max_length, query_model=dense))
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(row), flush=True)
        return row

    rows = [] if dense else [judge("dense", None, "restored", None)]
    for target in args.targets.split(","):
        plan = static_plan(dims, default_pruning_layers(dims.num_layers), [lengths], parse_target(target))
        for tokens in ("restored", "survivors"):
            rows.append(judge("static", target, tokens, plan))
    out = {
        "what": "ZERO-SHOT probe: static top-k plans applied to all-MiniLM-L6-v2 without any training",
        "model": "all-MiniLM-L6-v2 (packaged), pooling from its sentence-transformers config",
        "plan_fitted_on": f"token lengths of the SQuAD v1.1 dev paragraphs (max_length {args.max_length})",
        "squad_split": "questions of the articles after the first 38 (toprune's SQuAD split) vs all paragraphs",
        "rows": rows,
    }
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
