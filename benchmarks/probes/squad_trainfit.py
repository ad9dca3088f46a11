"""Fit probe: F1 on 500 training-article questions vs 500 held-out ones. Usage: python benchmarks/probes/squad_trainfit.py runs/squad-teacher runs/squad-top/best

Run from the repo root. Diagnostic scripts of the SQuAD investigation (benchmarks/README.md §6); results in
benchmarks/results/squad_probe_*. ``fit_scores`` is shared with squad_trainfit2.py.
"""

import sys, random, torch
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from datasets import Dataset
from toprune import load_model, load_tokenizer
from toprune.squad import load_squad, eval_features
from toprune.qa import QAInfo
from toprune.train import TaskData, make_loader, evaluate


@lru_cache(maxsize=1)
def subsets():
    """500 training-article questions (seed 0) and the first 500 held-out ones: read once per process."""
    train, dev, _ = load_squad("squad", str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    return [("train500", random.Random(0).sample(train, 500)), ("heldout500", dev[:500])]


def fit_scores(model, tok):
    """(subset name, F1, unpadded FLOPs reduction) on the two subsets."""
    for name, ex in subsets():
        f = eval_features(ex, tok, 384, 128)
        data = TaskData(
            "squad", "f1", None, None, Dataset.from_dict(f.inputs), None, kind="qa", qa=QAInfo("v1.1", ex, f, "x")
        )
        out = evaluate(model, make_loader(data.dev, tok, 64, shuffle=False), data, padded_length=384)
        yield name, round(out["f1"], 2), round(out.get("flops_reduction_unpadded", 1), 2)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for folder in sys.argv[1:]:
        tok = load_tokenizer(folder)
        model = load_model(folder)
        for row in fit_scores(model, tok):
            print(folder, *row, flush=True)
