"""Issue 23 probe: choose between embedding recipes on *training* text only (never on STS-B dev or the held-out
articles' questions), by mean cosine to the dense teacher on two held-out slices of the training text:

* passages: the "dev" slice of ``squad-paragraphs:`` (the paragraphs of the SQuAD training articles; a run trained
  on that source never saw them; a run trained on ``squad:...+glue:stsb`` may have: the comparison favours it);
* short texts: the questions and STS-B sentences of the "dev" slice of ``squad:...+glue:stsb`` (the other recipe's
  own held-out slice; a paragraph-only run never trained on short texts at all).

The slices are the ones ``toprune prune`` holds out (``toprune.embedding.prepare_embedding``). Each model is
served as saved (its plan, floor and pooling), the teacher is the dense model. Decision rule, fixed before reading: the recipe with the
higher mean of the two slices' cosines.

    python benchmarks/probes/emb_heldout.py --models runs/emb-floor56-ft/best runs/emb-floor56-para/best \
        --output benchmarks/results/embeddings_heldout_cosine.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics.pairwise import paired_cosine_distances

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))

import toprune  # noqa: E402
from toprune.embedding import load_texts, prepare_embedding, read_pooling  # noqa: E402
from toprune.embedding_eval import encode_with_flops  # noqa: E402
from toprune.plan import PruningPlan  # noqa: E402
from toprune.pretrained import resolve_model  # noqa: E402

DATA = HERE.parents[2] / "shared" / "data"
SQUAD = DATA / "squad" / "dev-v1.1.json"


def heldout(tokenizer, source: str) -> list[str]:
    """The "dev" slice ``toprune prune --task embedding --train-file SOURCE`` holds out (its own split)."""
    return list(prepare_embedding(tokenizer, source, DATA / "glue").dev_raw["text_a"])


def slices(tokenizer) -> dict[str, list[str]]:
    paragraphs = set(load_texts(f"squad-paragraphs:{SQUAD}"))
    mixed = heldout(tokenizer, f"squad:{SQUAD}+glue:stsb")
    return {
        "passages": heldout(tokenizer, f"squad-paragraphs:{SQUAD}"),
        "short_texts": [t for t in mixed if t not in paragraphs],
    }


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return 100 * float(1 - paired_cosine_distances(a, b).mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="pruned embedding model folders")
    parser.add_argument("--dense", default="minilm")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dense = resolve_model(args.dense)
    tokenizer = toprune.load_tokenizer(dense)
    texts = slices(tokenizer)
    teacher = toprune.load_model(dense, "AutoModel")
    reference = {
        name: encode_with_flops(teacher, tokenizer, items, read_pooling(dense), max_length=args.max_length)[0]
        for name, items in texts.items()
    }
    rows = []
    for folder in args.models:
        model = toprune.load_model(folder, "AutoModel")
        meta = PruningPlan.load(folder, num_layers=model.config.num_hidden_layers).meta
        pooling = read_pooling(folder, meta.get("pooling_tokens", "restored"))  # as the run pooled
        row = {"model": folder}
        for name, items in texts.items():
            emb, flops = encode_with_flops(model, tokenizer, items, pooling, max_length=args.max_length)
            row[f"cosine_{name}"] = mean_cosine(emb, reference[name])
            row[f"flops_reduction_{name}"] = flops
        row["cosine_mean"] = (row["cosine_passages"] + row["cosine_short_texts"]) / 2
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = {
        "what": "mean cosine to the dense teacher on held-out training text (issue 23's recipe choice)",
        "slices": {name: len(items) for name, items in texts.items()},
        "rule": "the higher cosine_mean wins; STS-B dev and the held-out articles' questions are not read",
        "rows": rows,
    }
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
