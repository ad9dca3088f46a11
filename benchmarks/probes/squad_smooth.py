"""Zero-shot probe of QA token scorers under the same 2x static plan (layers 1-5) as squad_plans.py and
squad_oracle.py, on the dense SQuAD teacher (no training). Its scorer is registered for this process
(toprune.strategies) and named by the plan.

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
from toprune import EncoderDims, apply_pruning, load_model, load_tokenizer
from toprune.plan import ScoringSpec
from toprune.qa import prepare_squad
from toprune.static import static_plan
from toprune.strategies import REGISTRY, QuestionScorer
from toprune.train import evaluate, make_loader

torch.set_num_threads(2)
folder = sys.argv[1]
tok, model = load_tokenizer(folder), load_model(folder)
model.eval()
data = prepare_squad(tok, "squad", Path(__file__).resolve().parents[3] / "shared" / "data", dev_only=True)
loader = make_loader(data.dev, tok, 64, shuffle=False)
dims = EncoderDims.from_config(model.config)
lengths = [sum(m) for m in data.dev["attention_mask"]]
G = {}


def early_qa(view):
    logits = model.qa_outputs(view.hidden).float()  # (B, n, 2) from the layer's post-attention states
    logits = logits.masked_fill(~view.valid.unsqueeze(-1), -1e4)
    return logits.softmax(dim=1).sum(dim=-1)


class Probe(QuestionScorer):  # the question's rows, as --scorer question (the spec's SCORE att)
    kind = "probe_smooth"

    def token_scores(self, view):
        kind, pool, r = G["spec"]
        att = super().token_scores(view)
        if kind in ("att", "lib"):
            s = att
        elif kind == "qa":
            s = early_qa(view)
        else:
            s = att / att.sum(dim=1, keepdim=True) + early_qa(view) / 2
        if r == 0 or kind == "lib":
            return s
        x = s.unsqueeze(1)
        y = (
            F.max_pool1d(x, 2 * r + 1, 1, r)
            if pool == "max"
            else F.avg_pool1d(x, 2 * r + 1, 1, r, count_include_pad=False)
        )
        return y.squeeze(1) + 1e-3 * s  # the token's own score breaks ties inside a neighbourhood


REGISTRY["scorer"][Probe.kind] = Probe  # the plan names it: the runtime ranks tokens by it
plan = static_plan(dims, [1, 2, 3, 4, 5], [lengths], 0.5, scoring=Probe.kind)
state = apply_pruning(model, plan)
for spec in sys.argv[2].split(","):
    kind, pool, r = spec.split(":")
    G["spec"] = (kind, pool, int(r))
    plan.scoring = ScoringSpec(Probe.kind, radius=int(r) if kind == "lib" else 0)  # lib: the library's radius
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
