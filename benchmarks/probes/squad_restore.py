"""Zero-shot probe: LAT-style restore, i.e. every pruned token re-enters the last layer (patched gather path). Usage: python benchmarks/probes/squad_restore.py runs/squad-teacher '1:.5,2:.5,3:.5,4:.5' [threads]

Run from the repo root. Diagnostic scripts of the SQuAD investigation (benchmarks/README.md §6); results in
benchmarks/results/squad_probe_*.
"""
import sys, json, time, torch, inspect
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "src"))
import toprune.runtime as rt
from toprune import load_model, load_tokenizer, apply_pruning, PruningPlan
from toprune.qa import prepare_squad
from toprune.train import make_loader, evaluate
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
src = inspect.getsource(rt._gather_forward)
src = src.replace("    stash = None\n", "    stash = None\n    valid0 = valid\n", 1)
src = src.replace("    for i, parts in enumerate(state.parts):\n", """    for i, parts in enumerate(state.parts):
        if i == len(state.parts) - 1 and stash is not None:
            stash.scatter_(1, torch.where(valid, positions, seq).unsqueeze(-1).expand(-1, -1, dim), hidden)
            hidden = stash[:, :seq].contiguous(); valid = valid0; stash = None
            positions = torch.arange(seq, device=hidden.device).expand(bsz, seq)
            key_mask = None if bool(valid0.all()) else valid0
""", 1)
ns = dict(vars(rt)); exec(src, ns); rt._gather_forward = ns["_gather_forward"]
folder = sys.argv[1]
tok = load_tokenizer(folder); model = load_model(folder)
data = prepare_squad(tok, "squad", str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data"), dev_only=True)
loader = make_loader(data.dev, tok, 64, shuffle=False)
for spec in sys.argv[2].split(";"):
    ratios = {int(k): float(v) for k, v in (kv.split(":") for kv in spec.split(","))}
    plan = PruningPlan.from_keep_ratios(6, ratios); t = time.time()
    apply_pruning(model, plan)
    out = evaluate(model, loader, data, padded_length=384)
    print(json.dumps({"restore_last": True, "ratios": ratios, "f1": round(out["f1"], 2), "red_unp": round(out["flops_reduction_unpadded"], 3),
          "kept": out["kept_fraction_per_layer"], "s": round(time.time()-t)}), flush=True)
