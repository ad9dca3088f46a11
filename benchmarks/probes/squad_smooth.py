"""Zero-shot probe of QA token scorers under the same 2x static plan (layers 1-5) as squad_plans.py and
squad_oracle.py, on the dense SQuAD teacher (no training). Patches toprune.runtime for this process.

A spec is SCORE:POOL:RADIUS, e.g. att:max:2
* SCORE att: question-guided attention (`--scorer question`, the library's); qa: the teacher's own QA head applied
  to the layer's post-attention states ("early" start/end probabilities, summed); mix: the two, each normalised to
  sum 1 over the sequence, added.
* lib: the library's own `score_radius` (plan meta; neighbours are original positions, pruned ones count 0),
  POOL ignored; the probe's own pools below use neighbours in the current, already shortened sequence.
* POOL max|mean, RADIUS r: each score spread over its +-r neighbours in the current (already shortened) sequence
  before ranking. Answers sit next to the context words that match the question, which is what the question rows
  attend to; keeping a window around each peak should keep the answer.
Usage (repo root): python benchmarks/probes/squad_smooth.py runs/squad-teacher att:max:0,att:max:2,qa:max:2

Diagnostic script of the SQuAD investigation (benchmarks/README.md §6); results in benchmarks/results/squad_probe_*.
"""

import json, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
import toprune.runtime as rt
from toprune import EncoderDims, apply_pruning, load_model, load_tokenizer
from toprune.plan import ScoringSpec
from toprune.qa import prepare_squad
from toprune.static import static_plan
from toprune.train import evaluate, make_loader

torch.set_num_threads(2)
folder = sys.argv[1]
tok, model = load_tokenizer(folder), load_model(folder)
model.eval()
data = prepare_squad(tok, "squad", Path(__file__).resolve().parents[3] / "shared" / "data", dev_only=True)
loader = make_loader(data.dev, tok, 64, shuffle=False)
dims = EncoderDims.from_config(model.config)
lengths = [sum(m) for m in data.dev["attention_mask"]]
plan = static_plan(dims, [1, 2, 3, 4, 5], [lengths], 0.5)
plan.scoring = ScoringSpec("question")
G = {}
orig_scores, orig_attention = rt.token_scores, rt.self_attention


def attention(parts, hidden, key_mask, need_probs, training):
    G["key_mask"] = key_mask
    return orig_attention(parts, hidden, key_mask, need_probs, training)


def wrap_output(fn):
    def out(context, residual):
        G["hidden"] = fn(context, residual)
        return G["hidden"]

    return out


def early_qa(n):
    logits = model.qa_outputs(G["hidden"]).float()  # (B, n, 2)
    mask = G["key_mask"]
    if mask is not None:
        logits = logits.masked_fill(~mask.unsqueeze(-1), -1e4)
    return logits.softmax(dim=1).sum(dim=-1)


def scores(probs, query_mask):
    kind, pool, r = G["spec"]
    att = orig_scores(probs, query_mask)
    if kind in ("att", "lib"):
        s = att
    elif kind == "qa":
        s = early_qa(att.shape[1])
    else:
        s = att / att.sum(dim=1, keepdim=True) + early_qa(att.shape[1]) / 2
    if r == 0 or kind == "lib":
        return s
    x = s.unsqueeze(1)
    y = F.max_pool1d(x, 2 * r + 1, 1, r) if pool == "max" else F.avg_pool1d(x, 2 * r + 1, 1, r, count_include_pad=False)
    return y.squeeze(1) + 1e-3 * s  # the token's own score breaks ties inside a neighbourhood


state = apply_pruning(model, plan)
for parts in state.parts:
    object.__setattr__(parts, "attn_output", wrap_output(parts.attn_output))  # BlockParts is frozen
rt.token_scores, rt.self_attention = scores, attention
for spec in sys.argv[2].split(","):
    kind, pool, r = spec.split(":")
    G["spec"] = (kind, pool, int(r))
    plan.scoring = ScoringSpec("question", radius=int(r) if kind == "lib" else 0)
    state.set_plan(plan)
    t = time.time()
    with torch.no_grad():
        out = evaluate(model, loader, data, padded_length=384)
    print(
        json.dumps(
            {
                "probe": "scorer",
                "score": kind,
                "pool": pool,
                "radius": int(r),
                "exact": round(out["exact"], 2),
                "f1": round(out["f1"], 2),
                "red_unp": round(out["flops_reduction_unpadded"], 3),
                "red_pad": round(out["flops_reduction_padded"], 3),
                "kept": out["kept_fraction_per_layer"],
                "s": round(time.time() - t),
            }
        ),
        flush=True,
    )
