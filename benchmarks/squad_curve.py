"""SQuAD v1.1: F1 vs unpadded FLOPs reduction (issue 18) -> results/squad_curve.json

Two recipes at each target, both on the dense QA teacher, with a static plan (the same share of survivors kept at
layers 1..L-1) fitted to the target on the *training* windows' lengths:
* ``question_r5``: the best QA recipe measured so far (benchmarks/README.md section 6): tokens ranked by the
  attention the question rows give them, each score raised to the best within 5 positions (``--scorer question
  --score-radius 5``). Zero-shot: every trained variant of it scored lower at 2x (section 6).
* ``static``: the static top-k baseline's ranking (attention received from every row, ``--method static``).
Evaluation on the 10 held-out articles of the dev file (the first 38 are the training articles), as every SQuAD row
of the project; no choice is made on them (the recipes and plans are fixed beforehand). FLOPs in both conventions
(padded: 384-token windows).

    python benchmarks/squad_curve.py --teacher runs/squad-teacher     # teacher: benchmarks/squad_top.sh, first line
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPES = {  # name -> the plan's ScoringSpec arguments
    "question_r5": dict(kind="question", radius=5),
    "static": dict(kind="attention", radius=0),
}
TARGETS = "1.25x,1.5x,2x"
WITHIN = 2.0  # F1 points under the teacher (the bar)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="runs/squad-teacher", help="dense QA model folder")
    parser.add_argument("--data-dir", default=str(HERE.parents[1] / "shared" / "data"))
    parser.add_argument("--targets", default=TARGETS, help=f"comma-separated reductions (default: {TARGETS})")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(HERE / "results" / "squad_curve.json"))
    parser.add_argument(
        "--add", action="store_true", help="keep the output's rows of other (recipe, target) pairs (same teacher)"
    )
    return parser.parse_args(argv)


def largest_within(rows: list[dict], teacher_f1: float, recipe: str) -> float | None:
    """The largest measured unpadded reduction of ``recipe`` whose F1 is within WITHIN of the teacher's."""
    ok = [r["flops_reduction_unpadded"] for r in rows if r["recipe"] == recipe and r["f1"] >= teacher_f1 - WITHIN]
    return max(ok) if ok else None


def plot(result: dict, path: Path) -> None:
    """F1 vs unpadded FLOPs reduction, one line per recipe, the teacher dashed."""
    from toprune.plots import plot_metric_vs_flops

    rows = [{"method": r["recipe"], "metric": r["f1"], **r} for r in result["rows"]]
    title = "SQuAD v1.1, MiniLM-L6: static plans, zero-shot on the teacher"
    plot_metric_vs_flops(rows, path, "F1 (10 held-out articles)", title, reference=result["teacher"]["f1"])


def main(argv=None) -> None:
    import torch

    from toprune import EncoderDims, apply_pruning, load_model, load_tokenizer, remove_pruning
    from toprune.flops import parse_target
    from toprune.plan import ScoringSpec
    from toprune.qa import prepare_squad
    from toprune.static import static_plan
    from toprune.train import evaluate, make_loader

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer, model = load_tokenizer(args.teacher), load_model(args.teacher)
    model.eval()
    data = prepare_squad(tokenizer, "squad", args.data_dir)
    loader = make_loader(data.dev, tokenizer, 64, shuffle=False)
    dims = EncoderDims.from_config(model.config)
    train_lengths = [sum(m) for m in data.train["attention_mask"]]

    def read(label: str) -> dict:
        start = time.time()
        with torch.no_grad():
            out = evaluate(model, loader, data, padded_length=384, progress=True)
        print(f"{label}: F1 {out['f1']:.2f} EM {out['exact']:.2f} ({time.time() - start:.0f} s)", flush=True)
        return out

    teacher = read("teacher")
    rows = []
    layers = list(range(1, dims.num_layers))
    for target in args.targets.split(","):
        relative_macs = parse_target(target)
        for recipe, spec in RECIPES.items():
            plan = static_plan(dims, layers, [train_lengths], relative_macs, scoring=ScoringSpec(**spec))
            apply_pruning(model, plan)
            out = read(f"{recipe} {target}")
            remove_pruning(model)
            rows.append(
                {
                    "recipe": recipe,
                    "target": target,
                    "trained": False,
                    "f1": out["f1"],
                    "exact": out["exact"],
                    "f1_excluding_pruned": out.get("f1_excluding_pruned"),
                    "flops_reduction_unpadded": out["flops_reduction_unpadded"],
                    "flops_reduction_padded": out["flops_reduction_padded"],
                    "kept_fraction_per_layer": out["kept_fraction_per_layer"],
                }
            )
    if args.add and Path(args.output).exists():
        old = json.loads(Path(args.output).read_text())
        if old["teacher"]["folder"] == args.teacher:
            fresh = {(r["recipe"], r["target"]) for r in rows}
            rows = [r for r in old["rows"] if (r["recipe"], r["target"]) not in fresh] + rows
            rows.sort(key=lambda r: (-parse_target(r["target"]), list(RECIPES).index(r["recipe"])))
    result = {
        "what": "SQuAD v1.1 F1 vs unpadded FLOPs reduction, static plans fitted on the training windows, zero-shot "
        "on the dense teacher (benchmarks/squad_curve.py)",
        "split": data.qa.split,
        "teacher": {"f1": teacher["f1"], "exact": teacher["exact"], "folder": args.teacher},
        "rows": rows,
        "largest_within_2_f1": {r: largest_within(rows, teacher["f1"], r) for r in RECIPES},
    }
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    plot(result, Path(args.output).with_suffix(".png"))
    print(json.dumps(result["largest_within_2_f1"]), "->", args.output)


if __name__ == "__main__":
    main()
