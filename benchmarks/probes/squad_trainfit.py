"""Fit probe: F1 on 500 training-article questions vs 500 held-out ones. Usage: python benchmarks/probes/squad_trainfit.py runs/squad-teacher runs/squad-top/best

Run from the repo root. Diagnostic scripts of the SQuAD investigation (benchmarks/README.md §6); results in
benchmarks/results/squad_probe_*.
"""
import sys, json, time, random, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "src"))
from datasets import Dataset
from toprune import load_model, load_tokenizer, apply_pruning, PruningPlan
from toprune.squad import load_squad, eval_features
from toprune.qa import QAInfo
from toprune.train import TaskData, make_loader, evaluate
torch.set_num_threads(1)
train, dev, _ = load_squad("squad", str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data"))
sub = random.Random(0).sample(train, 500)
for folder in sys.argv[1:]:
    tok = load_tokenizer(folder); model = load_model(folder)
    for name, ex in [("train500", sub), ("heldout500", dev[:500])]:
        f = eval_features(ex, tok, 384, 128)
        data = TaskData("squad", "f1", None, None, Dataset.from_dict(f.inputs), None, kind="qa", qa=QAInfo("v1.1", ex, f, "x"))
        loader = make_loader(data.dev, tok, 64, shuffle=False)
        out = evaluate(model, loader, data, padded_length=384)
        print(folder, name, round(out["f1"], 2), round(out.get("flops_reduction_unpadded", 1), 2), flush=True)
