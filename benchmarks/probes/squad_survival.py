"""Does fine-tuning under a fixed plan make the ranking worse? For each model folder, the same static 2x plan (the
one saved with the first folder's pruned model, scorer and radius included) on the held-out articles: F1, and how
often the gold answer's tokens all reach the last layer (in the window the gold answer falls in), with F1 split by
that. If the fine-tuned student keeps fewer answers than the zero-shot teacher, its attention drifted away from the
question-answer match the plan relies on. Usage (repo root):
    python benchmarks/probes/squad_survival.py runs/squad-static-q5/best runs/squad-teacher

Diagnostic script of the SQuAD investigation (benchmarks/README.md §6).
"""

import json, sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
import toprune.train as tr
from toprune import PruningPlan, apply_pruning, load_model, load_tokenizer, pruning_state
from toprune.qa import prepare_squad
from toprune.squad_metrics import squad_metrics
from toprune.squad import final_answers, postprocess

torch.set_num_threads(2)
plan = PruningPlan.load(sys.argv[1])
tok = load_tokenizer(sys.argv[1])
data = prepare_squad(tok, "squad", Path(__file__).resolve().parents[3] / "shared" / "data", dev_only=True)
feats, examples = data.qa.features, data.qa.examples
loader = tr.make_loader(data.dev, tok, 64, shuffle=False)
captured = {}
original = tr.qa_metrics


def capture(info, starts, ends, alive):
    captured.update(starts=starts, ends=ends, alive=alive)
    return original(info, starts, ends, alive)


tr.qa_metrics = capture


def answer_survives(alive: list[np.ndarray]) -> np.ndarray:
    """Per question: True if, in some window holding a gold answer, all of that answer's tokens survived."""
    ok = np.zeros(len(examples), dtype=bool)
    for w, offsets in enumerate(feats.offsets):
        q = feats.example_index[w]
        answers = examples[q]["answers"]
        for s, t in zip(answers["answer_start"], answers["text"]):
            e = s + len(t)
            toks = [j for j, off in enumerate(offsets) if off is not None and off[0] < e and off[1] > s]
            if toks and (offsets[toks[0]][0] <= s and offsets[toks[-1]][1] >= e) and alive[w][toks].all():
                ok[q] = True
    return ok


def split_f1(mask: np.ndarray) -> tuple[float, float]:
    preds = postprocess(
        examples, feats, captured["starts"], captured["ends"], data.qa.n_best, data.qa.max_answer_length, None
    )
    answers, _ = final_answers(examples, preds, data.qa.version)
    out = []
    for m in (mask, ~mask):
        idx = np.flatnonzero(m)
        sub = [examples[i] for i in idx]
        ids = {e["id"] for e in sub}
        out.append(squad_metrics(sub, {k: v for k, v in answers.items() if k in ids}, data.qa.version, None)["f1"])
    return out


for folder in sys.argv[1:]:
    model = load_model(folder, "AutoModelForQuestionAnswering")
    state = pruning_state(model)
    if state is None:
        state = apply_pruning(model, plan)
    else:
        state.set_plan(plan)
    out = tr.evaluate(model, loader, data, padded_length=384)
    ok = answer_survives(captured["alive"])
    f1_ok, f1_lost = split_f1(ok)
    print(
        json.dumps(
            {
                "probe": "survival",
                "model": folder,
                "f1": round(out["f1"], 2),
                "exact": round(out["exact"], 2),
                "answer_survives": round(float(ok.mean()), 4),
                "f1_if_survives": round(f1_ok, 2),
                "f1_if_pruned": round(f1_lost, 2),
                "red_unp": round(out["flops_reduction_unpadded"], 3),
            }
        ),
        flush=True,
    )
