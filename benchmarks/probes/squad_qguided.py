"""Zero-shot probe: question-guided token scores (attention received from question rows only) and/or protected question tokens, by a scorer of its own registered for this process (toprune.strategies). Usage: python benchmarks/probes/squad_qguided.py runs/squad-teacher qguided_protect,protect,qguided geo_1to5,geo_2to5

Run from the repo root. Diagnostic scripts of the SQuAD investigation (benchmarks/README.md §6); results in
benchmarks/results/squad_probe_*.
"""

import sys, json, time, torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "src"))
from toprune import load_model, load_tokenizer, apply_pruning, PruningPlan, EncoderDims, ScoringSpec
from toprune.qa import prepare_squad
from toprune.strategies import REGISTRY, Scorer
from toprune.train import make_loader, evaluate
from toprune.static import static_plan
from toprune.adapters import base_model

torch.set_num_threads(2)
folder = sys.argv[1]
modes = sys.argv[2].split(",")
tok = load_tokenizer(folder)
model = load_model(folder)
data = prepare_squad(
    tok, "squad", str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data"), dev_only=True
)
loader = make_loader(data.dev, tok, 64, shuffle=False)
dims = EncoderDims.from_config(model.config)
lengths = [sum(m) for m in data.dev["attention_mask"]]
G = {}


def hook(mod, args, kwargs):
    tt = kwargs.get("token_type_ids")
    G["q_end"] = (tt == 0).sum(1)  # CLS + question + SEP (padding has tt 0 too -> fix below)
    am = kwargs.get("attention_mask")
    G["q_end"] = ((tt == 0) & (am == 1)).sum(1)


base_model(model).register_forward_pre_hook(hook, with_kwargs=True)


class Probe(Scorer):
    """The mode's scores. Its question rows are the first slots of the current sequence, as this probe always took
    them; the library's ``--scorer question`` instead follows the surviving question tokens."""

    kind = "probe_qguided"

    def token_scores(self, view):
        probs = view.probs
        b, h, n, _ = probs.shape
        q_end = G["q_end"].to(probs.device)
        idx = torch.arange(n, device=probs.device)
        rows = (idx[None] >= 1) & (idx[None] < (q_end - 1)[:, None])
        if G["mode"] in ("qguided", "qguided_protect"):
            s = torch.einsum("bhqk,bq->bk", probs, rows.to(probs.dtype)) / (h * rows.sum(1, keepdim=True).clamp(min=1))
        else:
            s = super().token_scores(view)  # the library's attention scores
        if G["mode"] in ("protect", "qguided_protect"):
            s = s.masked_fill((idx[None] >= 1) & (idx[None] < q_end[:, None]), 1e4)
        return s


REGISTRY["scorer"][Probe.kind] = Probe  # every plan below names it: the runtime ranks tokens by it
scoring = ScoringSpec(Probe.kind)
plans = {
    "geo_1to5": static_plan(dims, [1, 2, 3, 4, 5], [lengths], 0.5, scoring=scoring),
    "geo_2to5": static_plan(dims, [2, 3, 4, 5], [lengths], 0.5, scoring=scoring),
    "learned_prev": PruningPlan.from_keep_ratios(6, {1: 0.6, 2: 0.75}, scoring=scoring),
}
for mode in modes:
    G["mode"] = mode
    for name in sys.argv[3].split(","):
        plan = plans[name]
        t = time.time()
        apply_pruning(model, plan)
        out = evaluate(model, loader, data, padded_length=384)
        print(
            json.dumps(
                {
                    "mode": mode,
                    "plan": name,
                    "f1": round(out["f1"], 2),
                    "f1_excl": round(out.get("f1_excluding_pruned", 0), 2),
                    "red_unp": round(out["flops_reduction_unpadded"], 3),
                    "kept": out["kept_fraction_per_layer"],
                    "s": round(time.time() - t),
                }
            ),
            flush=True,
        )
