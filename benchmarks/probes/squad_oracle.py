"""Zero-shot ceiling probe: how good can a 2x token-pruning plan be on SQuAD if the ranking were perfect?
Protects (never prunes) either the gold answer tokens or the dense teacher's own best span in each window, on top of
the attention scores, under the same static 2x plan as squad_plans.py. If even the gold oracle stays far below the
teacher, the ranking is not what limits QA at 2x (the stale states and the shortened context are); if it comes close,
a QA-aware ranking is the lever. Usage (repo root): python benchmarks/probes/squad_oracle.py runs/squad-teacher

Diagnostic script of the SQuAD investigation (benchmarks/README.md §6); results in benchmarks/results/squad_probe_*.
"""

import json, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from toprune import EncoderDims, apply_pruning, load_model, load_tokenizer, remove_pruning
from toprune.qa import prepare_squad
from toprune.static import static_plan
from toprune.strategies import REGISTRY, Scorer
from toprune.train import evaluate, head_logits, make_loader, split_targets

torch.set_num_threads(2)
BATCH = 64
folder = sys.argv[1]
tok, model = load_tokenizer(folder), load_model(folder)
data = prepare_squad(tok, "squad", Path(__file__).resolve().parents[3] / "shared" / "data", dev_only=True)
feats, examples = data.qa.features, data.qa.examples
loader = make_loader(data.dev, tok, BATCH, shuffle=False)
lengths = [sum(m) for m in data.dev["attention_mask"]]
width = max(lengths)


def gold_mask() -> torch.Tensor:
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for w, offsets in enumerate(feats.offsets):
        answers = examples[feats.example_index[w]]["answers"]
        spans = [(a, a + len(t)) for a, t in zip(answers["answer_start"], answers["text"])]
        for j, off in enumerate(offsets):
            if off is not None and any(off[0] < e and off[1] > s for s, e in spans):
                mask[w, j] = True
    return mask


@torch.no_grad()
def teacher_span_mask(max_len: int = 30) -> torch.Tensor:
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    model.eval()
    w = 0
    for batch in loader:
        inputs, _ = split_targets(batch)
        logits = head_logits(model(**inputs)).float()
        for b in range(logits.shape[0]):
            ctx = torch.tensor([o is not None for o in feats.offsets[w]] + [False] * (logits.shape[1] - lengths[w]))
            s = logits[b, :, 0].masked_fill(~ctx, -1e9)
            e = logits[b, :, 1].masked_fill(~ctx, -1e9)
            pair = s[:, None] + e[None, :]
            idx = torch.arange(len(s))
            ok = (idx[None] >= idx[:, None]) & (idx[None] < idx[:, None] + max_len)
            best = int(pair.masked_fill(~ok, -1e18).argmax())
            i, j = divmod(best, len(s))
            mask[w, i : j + 1] = True
            w += 1
    return mask


G = {"batch": -1}
model.base_model.register_forward_pre_hook(lambda *a: G.__setitem__("batch", G["batch"] + 1))


class Protected(Scorer):
    """The library's attention scores, with this batch's protected tokens (by original position) always kept."""

    kind = "oracle_protected"

    def token_scores(self, view):
        scores = super().token_scores(view)
        rows = G["protect"][G["batch"] * BATCH : G["batch"] * BATCH + view.positions.shape[0]]
        hit = rows.gather(1, view.positions.clamp(max=rows.shape[1] - 1)) & view.valid
        return scores.masked_fill(hit, 1e4)


REGISTRY["scorer"][Protected.kind] = Protected  # the plan below names it: the runtime ranks tokens by it
dims = EncoderDims.from_config(model.config)
plan = static_plan(dims, [1, 2, 3, 4, 5], [lengths], 0.5, scoring=Protected.kind)  # geo_1to5 of squad_plans.py
masks = {"teacher_span": teacher_span_mask(), "gold": gold_mask()}
for name, mask in masks.items():
    G["protect"], G["batch"], t = mask, -1, time.time()
    apply_pruning(model, plan)
    out = evaluate(model, loader, data, padded_length=384)
    remove_pruning(model)
    print(
        json.dumps(
            {
                "oracle": name,
                "plan": "geo_1to5",
                "protected_share": round(float(mask.sum() / sum(lengths)), 4),
                "f1": round(out["f1"], 2),
                "exact": round(out["exact"], 2),
                "f1_excl": round(out.get("f1_excluding_pruned", 0), 2),
                "red_unp": round(out["flops_reduction_unpadded"], 3),
                "kept": out["kept_fraction_per_layer"],
                "s": round(time.time() - t),
            }
        ),
        flush=True,
    )
