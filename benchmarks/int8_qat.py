"""Quantisation-aware fine-tuning of pruned models under their fixed plan (issue 21) -> results/int8_qat_<task>.json

Per pruned folder (a ToP or static run's ``best``), two arms from the same weights, each one fine-tuning of
``--epochs`` under the model's own fixed plan, distilled from the dense teacher as ToP's hard phase is:
* ``qat``: every encoder Linear computes ONNX Runtime's dynamic INT8 (``--qat``: ``toprune.qat.fake_int8``), so
  the checkpoint is chosen on the held-out training slice *as the INT8 graph will score it* (the starting weights
  are a candidate too);
* ``float``: the same fine-tuning without the rounding: the control that says whether a gain is the
  quantisation-awareness or just more training.
Then each kept model (and the untouched original) is exported with ``--int8-variant per_channel`` (the arithmetic
the fine-tuning simulated) and the dev metric of the fp32 and the INT8 graph is read once. Accuracy only: runs
beside other jobs (``OMP_NUM_THREADS=1``). Finished (folder, arm) pairs are skipped; the JSON is rewritten after each.

    python benchmarks/int8_qat.py --task mrpc --teacher runs/mrpc-teacher \\
        --pruned runs/study/mrpc-top/best runs/study/mrpc-top-s58/best runs/study/mrpc-top-s59/best
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def fine_tune(args, folder: Path, arm: str, out: Path) -> dict:
    """One arm through the library: ``--init-from folder`` (its plan, fixed) with or without ``--qat``."""
    import toprune
    from toprune.data import default_glue_dir
    from toprune.pretrained import load_model, load_tokenizer, save_pruned
    from toprune.train import prepare_data

    tokenizer = load_tokenizer(args.teacher)
    teacher = load_model(args.teacher)
    student = load_model(folder)
    plan = toprune.pruning_state(student).plan
    data = prepare_data(tokenizer, args.task, args.data_dir or default_glue_dir(), args.max_length, seed=args.seed)
    config = toprune.PruneConfig(
        task=args.task,
        init_from=str(folder),
        qat=arm == "qat",
        target=plan.meta.get("target", "2x"),
        epochs=args.epochs,
        warmup_epochs=args.epochs,  # the constraint ramp: no part in a fixed plan
        lr=args.lr,
        eval_every=args.eval_every,
        seed=args.seed,
        max_length=args.max_length,
    )
    pruner = toprune.Pruner(student, teacher, tokenizer, data, config)
    start = pruner.evaluate()  # step 0: the untouched weights compete too
    summary = pruner.fit()  # the kept model comes back float (--qat only simulated INT8)
    save_pruned(pruner.model, out, tokenizer)
    shutil.copy(folder / "toprune_task.json", out / "toprune_task.json")
    return {
        "start_selection_metric": start["metric"],
        "kept_step": summary["best"]["step"],
        "kept_selection_metric": summary["best"]["metric"],
    }


def export_int8(args, model: Path, out: Path) -> dict:
    if not (out / "toprune_onnx.json").is_file():
        cmd = [sys.executable, "-m", "toprune.cli", "export", str(model), "--output", str(out), "--int8"]
        cmd += ["--int8-variant", "per_channel", "--task", args.task]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        subprocess.run(cmd, check=True)
    int8 = json.loads((out / "toprune_onnx.json").read_text())["int8"]
    return {"dev_fp32": int8["dev_metric_fp32"], "dev_int8": int8["dev_metric_int8"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--teacher", required=True, help="the dense teacher the pruned models were distilled from")
    parser.add_argument("--pruned", nargs="+", required=True, help="pruned model folders (run/best)")
    parser.add_argument("--arms", default="qat,float")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=57)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--data-dir")
    parser.add_argument("--workdir", default="runs/int8_qat")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    output = Path(args.output or HERE / "results" / f"int8_qat_{args.task}.json")
    doc = json.loads(output.read_text()) if output.is_file() else {"task": args.task, "rows": []}
    done = {(r["pruned"], r["arm"]) for r in doc["rows"]}
    for folder in map(Path, args.pruned):
        name = folder.parent.name
        for arm in ["original", *args.arms.split(",")]:
            if (str(folder), arm) in done:
                continue
            model = folder if arm == "original" else Path(args.workdir) / f"{name}-{arm}"
            row = {"pruned": str(folder), "arm": arm, "epochs": 0 if arm == "original" else args.epochs}
            if arm != "original":
                if not (model / "toprune_plan.json").is_file():
                    row |= fine_tune(args, folder, arm, model)
                row |= {"lr": args.lr, "seed": args.seed}
            row |= export_int8(args, model, Path(args.workdir) / f"{name}-{arm}-onnx")
            row["int8_cost"] = row["dev_int8"] - row["dev_fp32"]
            doc["rows"].append(row)
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(doc, indent=1) + "\n")
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
