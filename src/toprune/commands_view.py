"""``toprune plot`` and ``toprune show``: views of runs and of one input's survivors."""

from __future__ import annotations

from pathlib import Path

from .errors import ToPruneError
from .runfolder import read_json, read_metrics


def _read_run(run: str) -> tuple[dict, dict]:
    """(the plot's view of one run, its summary.json or {}): every evaluation, and the checkpoint it kept."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise ToPruneError(f"{run} has no metrics.jsonl (is it a `toprune prune` output folder?)")
    summary_path = Path(run) / "summary.json"
    records = read_metrics(path)  # a partial last line (a run killed mid-write) is left out
    if not any("sel_metric" in r or "dev_metric" in r for r in records):
        raise ToPruneError(f"{path} holds no evaluation yet: nothing to plot")
    summary = read_json(summary_path) if summary_path.is_file() else {}
    try:
        # runs log the set checkpoints are chosen on: sel_ (the held-out slice, or dev), dev_ before selection
        key = "sel_" if records and "sel_metric" in records[0] else "dev_"
        points = [
            {
                "step": r["step"],
                "metric": r[f"{key}metric"],
                "flops_reduction_unpadded": r[f"{key}flops_reduction_unpadded"],
            }
            for r in records
            if f"{key}metric" in r
        ]
    except (KeyError, TypeError, IndexError) as exc:
        raise ToPruneError(f"{run}: unreadable run log ({type(exc).__name__}: {exc})") from None
    kept = (summary.get("best") or {}).get("step")
    on = (summary.get("selection") or {}).get("on", "dev")  # older runs chose on dev
    return {"name": Path(run).resolve().name, "points": points, "kept_step": kept, "on": on}, summary


def cmd_plot(args, data_dir):
    from .plots import plot_run_history
    from .report import teacher_metric

    runs, label, reference = [], None, None
    for run in args.runs:
        view, summary = _read_run(run)
        runs.append(view)
        setup = summary.get("setup") or {}
        selection = setup.get("selection") or {}
        label = label or (selection.get("label") if view["on"] != "dev" else setup.get("metric_label"))
        if label is None and summary.get("task"):  # summaries written before the setup was recorded
            label = f"{summary['task']} {'dev' if view['on'] == 'dev' else 'selection-set'} metric"
        if reference is None:  # the teacher on the same examples: its own record first, else the run's note of it
            reference = teacher_metric((summary.get("config") or {}).get("teacher"), view["on"])
            noted = summary.get("teacher_metric" if view["on"] == "dev" else "teacher_selection_metric")
            reference = reference if reference is not None else noted
    label = label or "dev metric"
    plot_run_history(
        runs, args.output, label, reference, title=f"{label}: every evaluation of {', '.join(r['name'] for r in runs)}"
    )
    count = sum(len(r["points"]) for r in runs)
    print(
        f"wrote {args.output} ({count} evaluations from {len(runs)} runs; teacher line: "
        f"{'none found' if reference is None else f'{reference:.2f}'}; kept checkpoints starred)"
    )
    for run in args.runs:
        if (Path(run) / "tokens_per_layer.png").is_file():
            print(f"tokens kept per layer of {run}'s kept model: {Path(run) / 'tokens_per_layer.png'}")
    return {"plot": str(args.output), "runs": runs, "teacher_metric": reference, "metric_label": label}


def cmd_show(args, data_dir):
    from .commands import _quiet
    import torch

    from .plots import survivors_html
    from .pretrained import load_model, load_tokenizer
    from .runtime import pruning_state

    _quiet()
    model, tokenizer = load_model(args.model), load_tokenizer(args.model)
    state = pruning_state(model)
    if state is None:
        raise ToPruneError(f"{args.model} has no toprune_plan.json: nothing is pruned")
    max_length = (getattr(args, "saved_task", None) or {}).get("max_length")  # as trained, when known
    batch = (
        tokenizer(args.text, args.pair, return_tensors="pt", truncation=True, max_length=max_length)
        if args.pair
        else tokenizer(args.text, return_tensors="pt", truncation=True, max_length=max_length)
    )
    state.record = True
    with torch.inference_mode():
        logits = model(**batch).logits[0]
    state.record = False
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    depth = [0] * len(tokens)
    for layer_positions in state.last.positions:
        for j in layer_positions[0].tolist():
            if j >= 0:
                depth[j] += 1
    layers = len(state.last.positions)
    for layer, layer_positions in enumerate(state.last.positions):
        kept = [tokens[j] for j in layer_positions[0].tolist() if j >= 0]
        print(f"layer {layer} ({len(kept):3d} tokens): {' '.join(kept)}")
    labels = model.config.id2label
    if logits.numel() > 1:
        probs = logits.float().softmax(-1)
        best = int(probs.argmax())
        print(f"prediction: {labels.get(best, best)} (score {float(probs[best]):.3f})")
    else:
        print(f"prediction: {float(logits):.4f} (regression)")
    if args.html:
        Path(args.html).write_text(survivors_html(tokens, depth, layers))
        print(f"wrote {args.html}")
    return {"tokens": tokens, "layers_entered": depth}
