"""Fit probe of the last checkpoint of the first ToP run (soft-mask training only): its deterministic plan vs keep-all, on train and held-out questions. Usage: python benchmarks/probes/squad_trainfit2.py

Run from the repo root. Diagnostic scripts of the SQuAD investigation (benchmarks/README.md §6); results in
benchmarks/results/squad_probe_*.
"""

import torch
from squad_trainfit import fit_scores  # this folder is on sys.path when run as a script; it also adds src/
from toprune import load_model, load_tokenizer, apply_pruning, PruningPlan
from toprune.gates import HardConcreteGates

torch.set_num_threads(1)
tok = load_tokenizer("runs/squad-top/best")
model = load_model("runs/squad-top/best")
blob = torch.load("runs/squad-top/checkpoint.pt", weights_only=False, map_location="cpu")
print("step", blob["step"])
model.load_state_dict(blob["student"])
gates = HardConcreteGates(5, 20)
gates.load_state_dict(blob["gates"])
final = PruningPlan.from_masks(6, [1, 2, 3, 4, 5], *gates.deterministic())
for plan_name, plan in [("final_plan", final), ("keep_all", None)]:
    apply_pruning(model, plan)
    for row in fit_scores(model, tok):
        print(plan_name, *row, flush=True)
