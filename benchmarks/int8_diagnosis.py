"""Where does the pruned model's extra INT8 loss come from? Every INT8 variant, and every op role quantised alone.

    python benchmarks/int8_diagnosis.py runs/mrpc-top/best --task mrpc --dense runs/mrpc-teacher
    # -> benchmarks/results/int8_diagnosis_mrpc.json (and a table on stdout)

For the pruned model (and the dense teacher, with ``--dense``), exported to ONNX once, it measures on the held-out
training slice (what ``toprune export --int8`` chooses on) and on dev (reported, never chosen on):

* ONNX Runtime fp32 (the reference), each variant of :data:`toprune.quantize.VARIANTS`, and dynamic INT8 of one op
  role at a time (:func:`toprune.quantize.matmul_roles`: qk_score = the Q/K projections of layers whose attention
  decides which tokens survive, qk, v, attn_out, ffn_in, ffn_out, other = pooler/classifier): which op costs;
* OpenVINO f32, bf16 and NNCF INT8 (calibrated on training texts) of the same graph;
* per graph: the metric, the share of dev predictions that differ from fp32, the largest |logit difference|, and
  for pruned graphs the *selection agreement*: per TopK of the graph (in graph order, two per pruning layer: the
  ranking, then the kept-first order), the share of dev examples whose TopK output equals fp32's (:func:`agreement`).
  A variant whose loss comes with low agreement of the kept-first TopKs loses through the token selection; one with
  full agreement loses in the arithmetic of the kept tokens.

No timing: accuracy only (latency is `toprune frontier`'s job). Single-threaded so it can run beside other jobs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from toprune.errors import ToPruneError  # noqa: E402


def run_graph(session, outputs: list[str], dataset, tokenizer, inputs: list[str]) -> dict:
    """Logits, labels and each TopK's indices per batch of a session over a tokenised dataset."""
    from toprune.train import make_loader

    logits, golds, picks = [], [], []
    for batch in make_loader(dataset, tokenizer, 32, False):
        golds.append(batch.pop("labels").numpy())
        got = session.run(outputs, {k: v.numpy() for k, v in batch.items() if k in inputs})
        logits.append(got[0])
        picks.append(got[1:])
    return {"logits": np.concatenate(logits), "golds": np.concatenate(golds), "picks": picks}


def agreement(ref: list, got: list) -> list[float]:
    """Per TopK: share of examples whose TopK output equals the reference's, in order. The pruned graph sorts twice
    per pruning layer (toprune.runtime): first the ranking of all tokens (equal order: strict, any swap counts, even
    one that keeps the same tokens), then kept tokens first in position order, the dropped ones after them (equal:
    exactly the same tokens kept)."""
    if not ref or not ref[0]:
        return []
    same, total = np.zeros(len(ref[0])), 0
    for r_batch, g_batch in zip(ref, got):
        total += len(r_batch[0])
        for t, (r, g) in enumerate(zip(r_batch, g_batch)):
            if r.shape == g.shape:
                same[t] += int((r == g).reshape(len(r), -1).all(axis=1).sum())
    return [float(x) / max(total, 1) for x in same]


def _kept_count(row: np.ndarray) -> int:
    """Kept tokens of a kept-first row: kept positions ascend, then the dropped ones start again lower."""
    falls = np.nonzero(np.diff(row) < 0)[0]
    return int(falls[0]) + 1 if len(falls) else 0


def kept_overlap(ref: list, got: list) -> list[float]:
    """Per TopK: mean over dev examples of |kept_ref & kept_got| / |kept_ref | kept_got| (1.0 where both rows are
    equal), a softer measure than :func:`agreement`; meaningful for the kept-first TopKs (odd positions)."""
    if not ref or not ref[0]:
        return []
    total, count = np.zeros(len(ref[0])), 0
    for r_batch, g_batch in zip(ref, got):
        count += len(r_batch[0])
        for t, (r, g) in enumerate(zip(r_batch, g_batch)):
            for a, b in zip(r.reshape(len(r), -1), g.reshape(len(g), -1)):
                k = max(_kept_count(a), _kept_count(b))
                if np.array_equal(a, b) or k == 0:
                    total[t] += 1.0
                    continue
                sa, sb = set(a[:k].tolist()), set(b[:k].tolist())
                total[t] += len(sa & sb) / len(sa | sb)
    return [float(x) / max(count, 1) for x in total]


def compare(name: str, data, ref: dict, got: dict) -> dict:
    from toprune.quantize import metric_of

    row = {"graph": name}
    for split, outputs in got.items():
        row[f"{split}_metric"] = metric_of(data, outputs["logits"], outputs["golds"])
    dev_ref, dev_got = ref["dev"], got["dev"]
    preds = (lambda x: x[:, 0].round(3)) if data.labels is None else (lambda x: x.argmax(-1))
    row["dev_changed_share"] = float((preds(dev_ref["logits"]) != preds(dev_got["logits"])).mean())
    row["dev_max_abs_diff"] = float(np.abs(dev_ref["logits"] - dev_got["logits"]).max())
    row["selection_agreement_dev"] = agreement(dev_ref["picks"], dev_got["picks"])
    row["kept_overlap_dev"] = kept_overlap(dev_ref["picks"], dev_got["picks"])
    return row


def diagnose(model_dir: str, label: str, data, tokenizer, workdir: Path, feeds: list[dict], threads: int) -> list:
    from tqdm.auto import tqdm

    from toprune.export import export_folder
    from toprune.openvino_backend import OpenVinoSession, quantize_openvino
    from toprune.quantize import VARIANTS, matmul_roles, quantize_variant, with_selection_outputs
    from toprune.serve import CONFIG_FILENAME, ONNX_FILENAME, make_session

    import onnx

    folder = export_folder(model_dir, workdir / label)
    inputs = json.loads((folder / CONFIG_FILENAME).read_text())["inputs"]
    sel_dir = workdir / f"{label}-selection"
    sel_dir.mkdir(parents=True, exist_ok=True)
    picks = with_selection_outputs(folder / ONNX_FILENAME, sel_dir / ONNX_FILENAME)
    outputs = ["logits", *picks]
    splits = {"heldout": data.selection, "dev": data.dev}

    def measure(session) -> dict:
        return {s: run_graph(session, outputs, ds, tokenizer, inputs) for s, ds in splits.items()}

    ref = measure(make_session(sel_dir / ONNX_FILENAME, threads))
    rows = [{**compare(f"{label} onnxruntime fp32", data, ref, ref), "backend": "onnxruntime", "variant": "fp32"}]
    present = sorted(set(matmul_roles(onnx.load(str(folder / ONNX_FILENAME))).values()))
    jobs = [(v, None) for v in VARIANTS] + [("dynamic", {role}) for role in present]
    for variant, only in tqdm(jobs, desc=f"{label}: INT8 variants", leave=False):
        path = sel_dir / "int8.onnx"
        try:
            info = quantize_variant(sel_dir / ONNX_FILENAME, path, variant, feeds, roles_only=only)
        except ToPruneError as exc:  # e.g. no Q/K of a score layer in a dense graph
            rows.append({"graph": f"{label} {variant} {sorted(only or [])}", "skipped": str(exc)})
            continue
        got = measure(make_session(path, threads))
        name = f"{label} onnxruntime {variant}" + (f" only {sorted(only)[0]}" if only else "")
        rows.append(
            {
                **compare(name, data, ref, got),
                "backend": "onnxruntime",
                "variant": variant,
                "roles_only": sorted(only) if only else None,
                "quantised": info["quantised"],
                "fp32": info["fp32"],
            }
        )
    quantize_openvino(sel_dir, feeds)
    for precision in tqdm(("f32", "bf16", "int8", "int8_bf16"), desc=f"{label}: OpenVINO", leave=False):
        path = sel_dir / ("model.ov_int8.xml" if precision.startswith("int8") else ONNX_FILENAME)
        got = measure(OpenVinoSession(path, precision, threads))
        rows.append(
            {**compare(f"{label} openvino {precision}", data, ref, got), "backend": "openvino", "variant": precision}
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| graph | held-out | dev | dev changed vs fp32 | max abs diff | selection agreement (per TopK) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            continue
        agree = ", ".join(f"{a:.3f}" for a in r.get("selection_agreement_dev", []))
        lines.append(
            f"| {r['graph']} | {r['heldout_metric']:.2f} | {r['dev_metric']:.2f} | "
            f"{100 * r['dev_changed_share']:.1f}% | {r['dev_max_abs_diff']:.4f} | {agree} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the pruned model folder (a run's best/)")
    parser.add_argument("--task", required=True, help="GLUE task (its training data calibrates and selects)")
    parser.add_argument("--dense", help="the dense teacher folder: its INT8 cost is the bar the pruned one must meet")
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "glue"))
    parser.add_argument("--calibration", type=int, default=300, help="training examples for static/NNCF INT8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=str(HERE.parent / "runs" / "int8_diagnosis"))
    parser.add_argument("--output", help="json path (default: benchmarks/results/int8_diagnosis_<task>.json)")
    args = parser.parse_args(argv)
    try:
        from toprune.pretrained import load_tokenizer
        from toprune.quantize import calibration_feeds
        from toprune.train import prepare_data

        for folder in filter(None, (args.model, args.dense)):
            if not Path(folder).is_dir():
                raise ToPruneError(f"{folder} is not a model folder")
        tokenizer = load_tokenizer(args.model)
        spec_file = Path(args.model) / "toprune_task.json"
        max_length = json.loads(spec_file.read_text()).get("max_length", 128) if spec_file.is_file() else 128
        data = prepare_data(tokenizer, args.task, args.data_dir, max_length, max_train_samples=args.calibration)
        feeds = calibration_feeds(data.train, tokenizer, args.calibration)
        workdir = Path(args.workdir) / args.task
        rows = diagnose(args.model, "pruned", data, tokenizer, workdir, feeds, args.threads)
        if args.dense:
            rows += diagnose(args.dense, "dense", data, tokenizer, workdir, feeds, args.threads)
    except ToPruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output or HERE / "results" / f"int8_diagnosis_{args.task}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "task": args.task,
        "metric": data.metric,
        "model": str(args.model),
        "dense": args.dense,
        "selected_on": data.selection_info.describe() if data.selection_info else None,
        "calibration_examples": len(data.train),
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
