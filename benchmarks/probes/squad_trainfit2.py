"""Fit probe of the last checkpoint of the first ToP run (soft-mask training only): its deterministic plan vs keep-all, on train and held-out questions. Usage: python benchmarks/probes/squad_trainfit2.py

Run from the repo root. Diagnostic scripts of the SQuAD investigation (benchmarks/README.md §6); results in
benchmarks/results/squad_probe_*.
"""
import sys, json, random, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "src"))
from datasets import Dataset
from toprune import load_model, load_tokenizer, apply_pruning, PruningPlan
from toprune.squad import load_squad, eval_features
from toprune.qa import QAInfo
from toprune.train import TaskData, make_loader, evaluate
torch.set_num_threads(1)
train, dev, _ = load_squad("squad", str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data"))
sub = random.Random(0).sample(train, 500)
tok = load_tokenizer("runs/squad-top/best"); model = load_model("runs/squad-top/best")
blob = torch.load("runs/squad-top/checkpoint.pt", weights_only=False, map_location="cpu")
print("step", blob["step"]); model.load_state_dict(blob["student"])
from toprune.gates import HardConcreteGates
gates = HardConcreteGates(5, 20); gates.load_state_dict(blob["gates"])
final = PruningPlan.from_masks(6, [1, 2, 3, 4, 5], *gates.deterministic())
for plan_name, plan in [("final_plan", final), ("keep_all", None)]:
    apply_pruning(model, plan)
    for name, ex in [("train500", sub), ("heldout500", dev[:500])]:
        f = eval_features(ex, tok, 384, 128)
        data = TaskData("squad", "f1", None, None, Dataset.from_dict(f.inputs), None, kind="qa", qa=QAInfo("v1.1", ex, f, "x"))
        out = evaluate(model, make_loader(data.dev, tok, 64, shuffle=False), data, padded_length=384)
        print(plan_name, name, round(out["f1"], 2), round(out.get("flops_reduction_unpadded", 1), 2), flush=True)
