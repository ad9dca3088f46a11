"""Zero-shot probe: the dense SQuAD teacher run with fixed 2x plans (no training). Usage: python benchmarks/probes/squad_plans.py runs/squad-teacher [threads]

Run from the repo root. Diagnostic scripts of the SQuAD investigation (benchmarks/README.md §6); results in
benchmarks/results/squad_probe_*.
"""

import sys, json, time, torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "src"))
from toprune import load_model, load_tokenizer, apply_pruning, remove_pruning, PruningPlan, EncoderDims
from toprune.qa import prepare_squad
from toprune.train import make_loader, evaluate
from toprune.static import static_plan, plan_relative_macs

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
folder = sys.argv[1]
tok = load_tokenizer(folder)
model = load_model(folder)
data = prepare_squad(
    tok, "squad", str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data"), dev_only=True
)
loader = make_loader(data.dev, tok, 64, shuffle=False)
dims = EncoderDims.from_config(model.config)
lengths = [sum(m) for m in data.dev["attention_mask"]]
L = dims.num_layers
plans = {
    "learned_prev": PruningPlan.from_keep_ratios(L, {1: 0.6, 2: 0.75}),
    "geo_1to5": static_plan(dims, [1, 2, 3, 4, 5], [lengths], 0.5),
    "geo_2to5": static_plan(dims, [2, 3, 4, 5], [lengths], 0.5),
    "geo_3to5": static_plan(dims, [3, 4, 5], [lengths], 0.5),
}
for r in [0.45, 0.5, 0.55]:
    pass
for name, plan in plans.items():
    t = time.time()
    remove_pruning(model)
    apply_pruning(model, plan)
    out = evaluate(model, loader, data, padded_length=384)
    print(
        json.dumps(
            {
                "plan": name,
                "ratios": {l: plan.keep_ratio(l) for l in range(L)},
                "rel_macs": round(plan_relative_macs(dims, plan, lengths), 3),
                "f1": round(out["f1"], 2),
                "f1_excl": round(out.get("f1_excluding_pruned", 0), 2),
                "red_unp": round(out["flops_reduction_unpadded"], 3),
                "kept": out["kept_fraction_per_layer"],
                "s": round(time.time() - t),
            }
        ),
        flush=True,
    )
