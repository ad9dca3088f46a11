"""Issue 23 probe (zero-shot, no training): does *merging* the tokens a plan removes into the survivors keep
all-MiniLM-L6-v2's mean-pooled embedding closer to the dense one than dropping them, at the same token counts?

The plan is the best 2x shape of section 11 (value scorer, pruned once, before layer 1). At that point each
removed token is either dropped (toprune's runtime; the survivors are mean-pooled) or merged, ToMe style (Bolya et
al., ICLR 2023): added into its most similar survivor (cosine of the attention keys, mean over heads, or of the
hidden states) as a size-weighted average; every later attention adds log(size) to a merged key's logits
("proportional attention": a merged token is attended as often as its members would be), and the final mean is
size-weighted, so at the merge point the pooled mean is exactly the dense one. Later layers run on the same number
of tokens as the drop plan: the same FLOPs, plus one (removed x kept) similarity product at the merge.

The forward here is a plain loop over toprune's :func:`toprune.adapters.block_parts` (the model's own modules); its
``drop`` mode must reproduce the library's runtime (checked against it in the output: ``runtime_drop``). Judged as
section 11: cosine to the dense embedding on 384 SQuAD training-article paragraphs, STS-B dev Spearman, and
retrieval of the held-out articles' questions (dense-encoded, and encoded by the same model) over all 2,067
paragraphs.

    python benchmarks/probes/emb_merge.py --threads 1 --output benchmarks/results/embeddings_merge_probe.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import toprune
from toprune.adapters import base_model, block_parts
from toprune.embedding import read_pooling
from toprune.embedding_eval import _squad, encode_with_flops, retrieval_metrics, retrieval_task, spearman_of, stsb_dev
from toprune.flops import EncoderDims
from toprune.plan import kept_count
from toprune.pretrained import resolve_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emb_zero_shot import shaped_plan  # noqa: E402  (the same fitted plan as section 11)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _reduce(h, keys, valid, size, scores, keep: list[bool], mode: str, match: str):
    """Keep CLS and the plan's share (``keep``: its kept rank bins) of the other valid tokens by ``scores``; the rest dropped or merged."""
    bsz, n, dim = h.shape
    n_valid = valid.sum(dim=1)
    n_keep = torch.tensor([kept_count(keep, int(m)) for m in n_valid - 1]) + 1  # the runtime's count, CLS too
    scores = scores.masked_fill(~valid, -1.0).clone()
    scores[:, 0] = float("inf")
    order = scores.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n).expand(bsz, n).contiguous())
    kept = (rank < n_keep.unsqueeze(1)) & valid
    if mode == "merge":
        feats = keys if match == "keys" else h
        feats = F.normalize(feats, dim=-1)
        sim = feats @ feats.transpose(1, 2)  # (B, n, n)
        sim = sim.masked_fill(~kept.unsqueeze(1), -2.0)
        target = sim.argmax(dim=2)  # each token's most similar survivor (a survivor: itself)
        gone = valid & ~kept
        weight = (size * gone).unsqueeze(-1)
        add = torch.zeros_like(h).scatter_add_(1, target.unsqueeze(-1).expand(-1, -1, dim), h * weight)
        extra = torch.zeros_like(size).scatter_add_(1, target, size * gone)
        new_size = size + extra
        h = torch.where(kept.unsqueeze(-1), (h * size.unsqueeze(-1) + add) / new_size.clamp(min=1).unsqueeze(-1), h)
        size = torch.where(kept, new_size, size)
    longest = int(n_keep.max())
    slots = torch.where(kept, torch.arange(n), n + torch.arange(n)).argsort(dim=1)[:, :longest]  # original order
    h = h.gather(1, slots.unsqueeze(-1).expand(-1, -1, dim))
    size = size.gather(1, slots)
    valid = kept.gather(1, slots)
    return h, valid, size


@torch.no_grad()
def encode(
    model,
    tokenizer,
    texts,
    mode: str,
    keep: list[bool] | None,
    match: str = "keys",
    proportional: bool = True,
    batch_size: int = 64,
) -> np.ndarray:
    parts = block_parts(model)
    embeddings = base_model(model).embeddings
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in ids], padding=True, truncation=True, max_length=256, return_tensors="pt")
        h = embeddings(input_ids=enc["input_ids"], token_type_ids=enc.get("token_type_ids"))
        valid = enc["attention_mask"].bool()
        size = valid.float()
        for i, p in enumerate(parts):
            q, k, v = (_heads(lin(h), p.num_heads) for lin in (p.query, p.key, p.value))
            prior = size.clamp(min=1).log() if proportional else torch.zeros_like(size)
            bias = torch.where(valid, prior, torch.finfo(h.dtype).min)[:, None, None, :]
            reduce_now = mode != "dense" and i == 0  # the plan removes tokens before layer 1
            if reduce_now:
                probs = ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5 + bias).softmax(dim=-1)
                ctx = probs @ v
            else:
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            h = p.attn_output(ctx.transpose(1, 2).reshape(h.shape), h)
            if reduce_now:  # value scorer: attention received from the valid rows x value norm, mean over heads
                rows = valid.float()
                received = (rows[:, None, None, :] @ probs).squeeze(2)  # (B, H, n)
                scores = (received * v.norm(dim=-1)).sum(1) / (probs.shape[1] * rows.sum(1, keepdim=True))
                keys = k.transpose(1, 2).reshape(h.shape)
                h, valid, size = _reduce(h, keys, valid, size, scores, keep, mode, match)
            h = p.ffn(h)
        w = (size * valid).unsqueeze(-1)
        out[ids] = ((h * w).sum(1) / w.sum(1)).numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=2.0)
    parser.add_argument("--paragraphs", type=int, default=384)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="drop,merge:keys,merge:hidden,merge:keys:noprop")
    parser.add_argument("--no-dense-row", action="store_true", help="skip judging the dense model (known already)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = resolve_model("minilm")
    model = toprune.load_model(folder, "AutoModel").eval()
    tokenizer = toprune.load_tokenizer(folder)
    dims = EncoderDims.from_config(model.config)
    examples, paragraphs, train_articles = _squad(DATA / "squad" / "dev-v1.1.json")
    train = set(sorted({e["article"] for e in examples})[:train_articles])
    pool_texts = list(dict.fromkeys(e["context"] for e in examples if e["article"] in train))
    texts = random.Random(0).sample(pool_texts, args.paragraphs)
    lengths = [len(t) for t in tokenizer(paragraphs, truncation=True, max_length=256)["input_ids"]]
    plan = shaped_plan(dims, model.config.num_hidden_layers, 1, lengths, args.target, "value", "once")
    keep = plan.kept_bins[1]
    sts_a, sts_b, gold = stsb_dev(DATA / "glue")
    corpus, questions, truth, _ = retrieval_task(DATA / "squad" / "dev-v1.1.json")
    pooling = read_pooling(folder, "survivors")

    def judge(fn) -> dict:
        started = time.perf_counter()
        emb = fn(texts)
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        row = {"teacher_cosine": 100 * float((emb * ref).sum(1).mean())} if ref is not None else {}
        row["stsb_spearman"] = spearman_of(fn(sts_a), fn(sts_b), gold)
        docs = fn(corpus)
        row.update({f"{k}_dense_queries": v for k, v in retrieval_metrics(dense_queries, docs, truth).items()})
        row.update(retrieval_metrics(fn(questions), docs, truth))
        row["seconds"] = round(time.perf_counter() - started, 1)
        return row

    ref = None
    dense_queries = encode(model, tokenizer, questions, "dense", None)
    ref = encode(model, tokenizer, texts, "dense", None)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    with open(args.output, "a") as out:

        def emit(row):
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")
            out.flush()

        if not args.no_dense_row:
            emit({"variant": "dense", **judge(lambda t: encode(model, tokenizer, t, "dense", None))})
        toprune.apply_pruning(model, plan)
        _, flops = encode_with_flops(model, tokenizer, corpus, pooling)
        runtime = judge(lambda t: encode_with_flops(model, tokenizer, t, pooling)[0])
        toprune.remove_pruning(model)
        emit(
            {
                "variant": "runtime_drop",
                "target": args.target,
                "plan": plan.describe(),
                "keep": plan.keep_ratio(1),
                "flops_reduction_unpadded": flops,
                **runtime,
            }
        )
        for variant in args.variants.split(","):
            mode, *rest = variant.split(":")
            match = rest[0] if rest else "keys"
            prop = "noprop" not in rest
            row = judge(lambda t, m=mode, a=match, b=prop: encode(model, tokenizer, t, m, keep, a, b))
            emit(
                {
                    "variant": variant,
                    "target": args.target,
                    "keep": plan.keep_ratio(1),
                    "flops_reduction_unpadded": flops,
                    **row,
                }
            )


if __name__ == "__main__":
    main()
