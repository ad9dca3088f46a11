"""Issue 23 probe (zero-shot, no training): which token scorer and which plan shape keep all-MiniLM-L6-v2's
mean-pooled embedding closest to the dense one at a FLOPs target?

Proxy metrics, cheap enough to try many variants: mean cosine to the dense embedding on paragraphs of the SQuAD
*training* articles (never the held-out retrieval articles), and STS-B dev Spearman. The best variants then get the
full retrieval evaluation (``--retrieval``). Scorers are registered through the public hook
(``toprune.strategies.REGISTRY["scorer"]``):

* ``attention``: the library's (attention received, mean over heads and valid rows);
* ``value``: the library's ``--scorer value`` (attention weighted by the norm of the value vector a token carries;
  first tried here as a registered scorer, then built in: the same rankings, the same numbers);
* ``no_sep``: attention received, the closing separator always dropped first (it is the main attention sink).

    python benchmarks/probes/emb_zero_shot.py --threads 1 --output runs/emb_zero_shot.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

import toprune
from toprune.embedding import read_pooling
from toprune.embedding_eval import _squad, encode_with_flops, retrieval_metrics, retrieval_task, spearman_of, stsb_dev
from toprune.flops import EncoderDims
from toprune.plan import PruningPlan, ScoringSpec
from toprune.pretrained import resolve_model
from toprune.static import plan_relative_macs
from toprune.strategies import REGISTRY, Scorer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
DENSE_QUERIES: dict[str, np.ndarray] = {}
MAPS: dict[str, dict] = {}


class InverseScorer(Scorer):
    """The least-attended first: a probe of whether attention received picks what a mean-pooled embedding needs."""

    kind = "inverse"

    def token_scores(self, view):
        return -super().token_scores(view)


class NormScorer(Scorer):
    """The norm of the token's post-attention state: tokens the layer changed the most survive."""

    kind = "state_norm"

    def token_scores(self, view):
        return view.hidden.norm(dim=-1)


class NoSepScorer(Scorer):
    kind = "no_sep"

    def token_scores(self, view):
        scores = super().token_scores(view)
        last = torch.where(view.valid, view.positions, -1).amax(dim=1, keepdim=True)
        return scores.masked_fill(view.positions == last, 0.0)


for cls in (NoSepScorer, InverseScorer, NormScorer):
    REGISTRY["scorer"][cls.kind] = cls


@torch.no_grad()
def fit_maps(model, tokenizer, texts: list[str], ridge: float = 1.0) -> dict[int, torch.Tensor]:
    """Per layer l, the ridge-regression map ([h_l, 1] @ W) from a token's output of layer l to its last-layer state,
    fitted on the *dense* model's states of every real token of ``texts``."""
    xs: dict[int, list] = {}
    ys = []
    toprune.remove_pruning(model)
    for start in range(0, len(texts), 32):
        batch = tokenizer(texts[start : start + 32], padding=True, truncation=True, max_length=256, return_tensors="pt")
        states = model(**batch, output_hidden_states=True).hidden_states[1:]
        real = batch["attention_mask"].bool()
        ys.append(states[-1][real])
        for layer, h in enumerate(states[:-1]):
            xs.setdefault(layer, []).append(h[real])
    y = torch.cat(ys).double()
    maps = {}
    for layer, parts in xs.items():
        x = torch.cat(parts).double()
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        gram = x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype)
        maps[layer] = torch.linalg.solve(gram, x.T @ y).float()
    return maps


@torch.no_grad()
def encode_restored(model, tokenizer, texts: list[str], maps=None, batch_size: int = 32) -> np.ndarray:
    """Mean pooling over *every* token; a dropped token's last-layer state estimated from its state when dropped:
    ``maps`` None: that state plus the mean change the survivors went through from that layer to the last; else
    the layer's fitted linear map (:func:`fit_maps`). Cheap: O(n d) or O(n d^2) once per dropped token."""
    state = toprune.pruning_state(model)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in ids], padding=True, truncation=True, max_length=256, return_tensors="pt")
        state.record = True
        outputs = model(**batch, output_hidden_states=True)
        state.record = False
        final = outputs.last_hidden_state  # (B, N, d): survivors' last state, dropped tokens' when dropped
        layers = list(outputs.hidden_states[1:])  # full-length outputs of every layer
        present = []  # (B, N) bool per layer: computed in that layer
        for positions in state.last.positions:
            mask = torch.zeros(final.shape[:2], dtype=torch.bool)
            rows, cols = torch.nonzero(positions >= 0, as_tuple=True)
            mask[rows, positions[rows, cols]] = True
            present.append(mask)
        real = batch["attention_mask"].bool()
        survivors = present[-1] & real
        estimate = final.clone()
        for layer in range(len(layers) - 1):
            dropped_after = present[layer] & ~present[layer + 1] & real  # computed in `layer`, not in the next
            if not dropped_after.any():
                continue
            if maps is None:
                w = survivors.unsqueeze(-1).float()
                delta = ((final - layers[layer]) * w).sum(1) / w.sum(1).clamp(min=1)  # (B, d)
                guess = layers[layer] + delta.unsqueeze(1)
            else:
                h = layers[layer]
                guess = torch.cat([h, torch.ones(*h.shape[:2], 1)], dim=-1) @ maps[layer]
            estimate = torch.where(dropped_after.unsqueeze(-1), guess, estimate)
        w = real.unsqueeze(-1).float()
        out[ids] = ((estimate * w).sum(1) / w.sum(1)).numpy()
    return out


def shaped_plan(
    dims, layers: int, start: int, lengths, target: float, kind: str, mode: str, merge: bool = False
) -> PruningPlan:
    """The largest keep ratio r meeting the target: ``geometric`` keeps r of the survivors at every layer from
    ``start``; ``once`` keeps r at ``start`` only. ``merge``: the removed tokens merge into survivors (ToMe)."""
    lo, hi = 0.0, 1.0
    for _ in range(30):
        r = (lo + hi) / 2
        ratios = {layer: r for layer in range(start, layers)} if mode == "geometric" else {start: r}
        plan = PruningPlan.from_keep_ratios(layers, ratios, scoring=ScoringSpec(kind, merge=merge))
        if plan_relative_macs(dims, plan, lengths) <= 1 / target:
            lo = r
        else:
            hi = r
    ratios = {layer: lo for layer in range(start, layers)} if mode == "geometric" else {start: lo}
    return PruningPlan.from_keep_ratios(layers, ratios, scoring=ScoringSpec(kind, merge=merge))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=2.0)
    parser.add_argument("--paragraphs", type=int, default=384)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="", help="comma list scorer:start:mode[:merge] (default: the grid below)")
    parser.add_argument(
        "--restore",
        choices=["delta", "mapped"],
        help="pool every token, a dropped one estimated from its state when dropped (encode_restored)",
    )
    parser.add_argument("--retrieval", action="store_true", help="also the full SQuAD retrieval (slow)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    for variant in filter(None, args.variants.split(",")):  # before any encoding: a typo must not measure "drop"
        if variant.split(":")[3:] not in ([], ["merge"]):
            parser.error(f"variant {variant}: the optional fourth field is 'merge'")
    torch.set_num_threads(args.threads)
    folder = resolve_model("minilm")
    model = toprune.load_model(folder, "AutoModel")
    tokenizer = toprune.load_tokenizer(folder)
    dims = EncoderDims.from_config(model.config)
    layers = model.config.num_hidden_layers
    examples, paragraphs, train_articles = _squad(DATA / "squad" / "dev-v1.1.json")
    train = sorted({e["article"] for e in examples})[:train_articles]
    pool_texts = list(dict.fromkeys(e["context"] for e in examples if e["article"] in set(train)))
    texts = random.Random(0).sample(pool_texts, args.paragraphs)
    if args.restore == "mapped":  # fitted on other training paragraphs than the ones judged
        rest = sorted(set(pool_texts) - set(texts))
        MAPS["maps"] = fit_maps(model, tokenizer, random.Random(1).sample(rest, 256))
    lengths = [len(t) for t in tokenizer(paragraphs, truncation=True, max_length=256)["input_ids"]]
    sts_a, sts_b, gold = stsb_dev(DATA / "glue")
    pooling = read_pooling(folder, "survivors")

    def measure(plan) -> dict:
        if plan is None:
            toprune.remove_pruning(model)
        else:
            toprune.apply_pruning(model, plan)
        started = time.perf_counter()
        emb, flops = encode_with_flops(model, tokenizer, texts, pooling, batch_size=32)
        left, _ = encode_with_flops(model, tokenizer, sts_a, pooling)
        right, _ = encode_with_flops(model, tokenizer, sts_b, pooling)
        if args.restore and plan is not None:
            maps = MAPS.get("maps") if args.restore == "mapped" else None
            emb, left, right = (encode_restored(model, tokenizer, t, maps) for t in (texts, sts_a, sts_b))
        row = {"flops_reduction_unpadded": flops, "stsb_spearman": spearman_of(left, right, gold)}
        row["emb"] = emb
        if args.retrieval:  # the questions encoded by the dense model: the corpus is what pruning speeds up
            paragraphs, questions, truth, _ = retrieval_task(DATA / "squad" / "dev-v1.1.json")
            if "queries" not in DENSE_QUERIES:
                toprune.remove_pruning(model)
                DENSE_QUERIES["queries"] = encode_with_flops(model, tokenizer, questions, pooling)[0]
                if plan is not None:
                    toprune.apply_pruning(model, plan)
            if args.restore and plan is not None:
                docs = encode_restored(model, tokenizer, paragraphs, MAPS.get("maps"))
            else:
                docs = encode_with_flops(model, tokenizer, paragraphs, pooling)[0]
            metrics = retrieval_metrics(DENSE_QUERIES["queries"], docs, truth)
            row.update({f"{k}_dense_queries": v for k, v in metrics.items()})
            if plan is not None:  # the questions encoded by the same (pruned) model: the measure
                row.update(retrieval_metrics(encode_with_flops(model, tokenizer, questions, pooling)[0], docs, truth))
        row["seconds"] = round(time.perf_counter() - started, 1)
        return row

    dense = measure(None)
    ref = dense.pop("emb")
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    variants = (
        args.variants.split(",")
        if args.variants
        else [
            "attention:1:geometric",
            "value:1:geometric",
            "no_sep:1:geometric",
            "random:1:geometric",
            "attention:2:geometric",
            "attention:3:geometric",
            "attention:1:once",
            "attention:2:once",
        ]
    )
    with open(args.output, "a") as out:
        out.write(json.dumps({"variant": "dense", **dense}) + "\n")
        for variant in variants:
            kind, start, mode, *merge = variant.split(":")
            plan = shaped_plan(dims, layers, int(start), lengths, args.target, kind, mode, merge == ["merge"])
            row = measure(plan)
            emb = row.pop("emb")
            emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
            row["teacher_cosine"] = 100 * float((emb * ref).sum(1).mean())
            row = {
                "variant": variant + (f":{args.restore}" if args.restore else ""),
                "target": args.target,
                "plan": plan.describe(),
                **row,
            }
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
