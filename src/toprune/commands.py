"""What each ``toprune`` subcommand does (the parser is in cli.py); each returns its JSON-able result."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ToPruneError
from .runfolder import read_json, read_metrics
from .safeio import atomic_write_text, check_writable


def _quiet() -> None:
    import datasets
    import transformers

    import huggingface_hub

    transformers.logging.set_verbosity_error()  # e.g. "classifier weights newly initialised" is expected here
    transformers.logging.disable_progress_bar()  # "Loading weights" bars would bury a one-line error
    huggingface_hub.utils.logging.set_verbosity_error()  # offline retries: our one-line error says it all
    datasets.disable_progress_bars()


def _task_dev(model_path: str, args, data_dir, say: bool = True):
    """Tokenizer, dev data and loader; the setup is said once (on stderr under --json: stdout is the JSON)."""
    import sys

    from .pretrained import load_tokenizer
    from .report import setup_facts, setup_lines
    from .task_spec import prepare_saved
    from .train import make_loader, prepare_data

    tokenizer = load_tokenizer(model_path)
    if getattr(args, "data", None):  # a model that carries its task: only the file to evaluate on
        data = prepare_saved(tokenizer, args.saved_task, args.data, args.max_length)
    else:
        data = prepare_data(tokenizer, args.task, data_dir, args.max_length, seed=args.seed, dev_only=True,
                            **_user_files(args))
    args.setup = setup_facts(data, max_length=args.max_length)
    if getattr(args, "data_recorded", False):
        args.setup["data"]["note"] = f", as recorded in {Path(model_path) / 'toprune_task.json'}"
    for line in setup_lines(args.setup) if say else ():
        print(line, file=sys.stderr if getattr(args, "json", False) else sys.stdout)
    return tokenizer, data, make_loader(data.dev, tokenizer, 64, False)


def _user_files(args) -> dict:
    return {"train_file": args.train_file, "validation_file": args.validation_file,
            "text_columns": args.text_columns, "label_column": args.label_column, "task_type": args.task_type}


def cmd_finetune(args, data_dir):
    from .finetune import finetune_teacher

    _quiet()
    return finetune_teacher(args.model, args.task, data_dir, args.output, epochs=args.epochs, lr=args.lr,
                            max_length=args.max_length, max_train_samples=args.max_train_samples, seed=args.seed,
                            select_on=args.select_on, resume=args.resume, overwrite=args.overwrite,
                            **_user_files(args))


def _prune_config(args, teacher: str, output: str, data_dir):
    from .prune import PruneConfig

    return PruneConfig(
        teacher=teacher, task=args.task, data_dir=data_dir, output_dir=output, target=args.target,
        convention=args.convention, padded_length=args.padded_length, epochs=args.epochs,
        warmup_epochs=args.warmup_epochs, hard_epochs=args.hard_epochs, lr=args.lr, gate_lr=args.gate_lr,
        lambda_lr=args.lambda_lr,
        pruning_layers=args.pruning_layers, num_bins=args.bins, topk=args.topk,
        ranking=not args.no_ranking, rank_target=args.rank_target, rank_layers=args.rank_layers, scorer=args.scorer,
        score_radius=args.score_radius, rank_alpha=args.rank_alpha,
        layer_gates=not args.no_layer_gates, monotone=args.monotone, fit_plan=not args.no_fit_plan,
        lambda_anti_windup=not args.plain_lambda_ascent,
        **({} if args.gate_init is None else {"gate_init": args.gate_init}),
        method=args.method,
        eval_every=args.eval_every, save_every=args.eval_every, max_train_samples=args.max_train_samples,
        max_length=args.max_length, seed=args.seed, select_on=args.select_on, resume=args.resume,
        overwrite=getattr(args, "overwrite", False),
        constraint=args.constraint, inference_batch_size=args.inference_batch_size,
        inference_backend=args.inference_backend, inference_threads=args.inference_threads or 0,
        latency_profile=args.latency_profile, pooling_tokens=getattr(args, "pooling_tokens", "restored"),
        embedding_loss=getattr(args, "embedding_loss", "cosine"),
        **_user_files(args))


def cmd_prune(args, data_dir):
    from .prune import ToPRun

    _quiet()
    if getattr(args, "files_recorded", False):
        print(f"the teacher's files, as recorded in {Path(args.teacher) / 'toprune_task.json'}:")
    run = ToPRun(_prune_config(args, args.teacher, args.output, data_dir))
    summary = run.run()
    run.accelerator.end_training()  # under `accelerate launch`: close the process group before exiting
    if summary["best"] is None:
        raise ToPruneError("no evaluated checkpoint met the target: train longer (--epochs) or relax --target")
    return summary


def cmd_eval(args, data_dir):
    from .pretrained import load_model
    from .runtime import apply_pruning, pruning_state
    from .train import check_head, evaluate

    _quiet()
    tokenizer, data, loader = _task_dev(args.model, args, data_dir)
    model = load_model(args.model)
    check_head(model, args.model, data, args.max_length)
    if pruning_state(model) is None:
        apply_pruning(model)  # keep-all: the dense model, measured the same way
    result = evaluate(model, loader, data, args.padded_length, progress=True)
    result = {"task": data.name, "metric_name": data.metric, **result, "setup": args.setup}
    if not args.json and data.kind == "qa":
        print(f"{data.name} ({len(data.qa.examples)} questions in {len(data.dev)} windows of {args.max_length}; "
              f"{data.qa.split}): EM {result['exact']:.2f}, F1 {result['f1']:.2f}")
        if "f1_excluding_pruned" in result:
            print("  with pruned positions excluded from answer boundaries: "
                  f"EM {result['exact_excluding_pruned']:.2f}, F1 {result['f1_excluding_pruned']:.2f}")
    elif not args.json:
        print(f"{args.setup['metric_label']} ({len(data.dev)} examples): {result['metric']:.2f}")
    if not args.json:
        print(f"FLOPs reduction: {result['flops_reduction_unpadded']:.2f}x vs dense unpadded, "
              f"{result['flops_reduction_padded']:.2f}x vs dense padded to {args.padded_length}")
        kept = ", ".join(f"L{i}:{x:.0%}" for i, x in enumerate(result["kept_fraction_per_layer"]))
        print(f"tokens entering each layer (mean share of an example's tokens): {kept}")
    return result


def _metric_in(runner, loader, data) -> float:
    """The headline metric of a classification/regression model run by a latency runner (an ONNX Runtime
    session): the same dev batches as :func:`toprune.train.evaluate`, predictions made by the session itself."""
    import numpy as np

    from .metrics import glue_metrics

    preds, golds = [], []
    for batch in loader:
        logits = np.asarray(runner({k: v for k, v in batch.items() if k != "labels"}))
        preds.append(logits[:, 0] if data.labels is None else logits.argmax(-1))
        golds.append(batch["labels"].numpy())
    return glue_metrics(data.metric, np.concatenate(preds), np.concatenate(golds))[data.metric]


def _bench(dense_path, pruned_path, args, data_dir, dense_metric=None, say: bool = True):
    """(the JSON-able result, the per-example share of tokens entering each layer on dev) of dense vs pruned."""
    import tempfile

    import torch

    from .benchmark import compare_latency, latency_runners
    from .pretrained import load_model
    from .runtime import pruning_state
    from .train import check_head, evaluate

    tokenizer, data, loader = _task_dev(pruned_path, args, data_dir, say)
    dense, pruned = load_model(dense_path), load_model(pruned_path)
    check_head(dense, dense_path, data, args.max_length)
    check_head(pruned, pruned_path, data, args.max_length)
    shape = ("model_type", "num_hidden_layers", "hidden_size", "vocab_size")
    if any(getattr(dense.config, k, None) != getattr(pruned.config, k, None) for k in shape):
        raise ToPruneError(f"--dense {dense_path} and --pruned {pruned_path} are different architectures; compare "
                           f"a pruned model with the dense teacher it was pruned from")
    if pruning_state(dense) is not None:
        raise ToPruneError(f"--dense {dense_path} is a pruned model; give the dense teacher")
    if pruning_state(pruned) is None:
        raise ToPruneError(f"--pruned {pruned_path} has no toprune_plan.json")
    pruned_eval = evaluate(pruned, loader, data, args.padded_length, progress=True, return_kept=True)
    kept_fractions = pruned_eval.pop("kept_fractions")
    if dense_metric is None:
        dense_metric = evaluate(dense, loader, data)["metric"]
    dev = data.dev_raw.select(range(min(args.examples, len(data.dev_raw))))
    texts_b = list(dev["text_b"]) if "text_b" in dev.column_names else None
    sizes = list(args.batch_sizes)
    backend = getattr(args, "backend", "pytorch")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        runners = latency_runners(dense, pruned, tokenizer, tmp, args.threads, backend, getattr(args, "int8", False))
        lat = compare_latency(runners, tokenizer, list(dev["text_a"]), texts_b, sizes, args.repeats,
                              max_length=args.max_length)
        computed_in = "PyTorch"
        if backend == "onnxruntime" and data.kind != "qa":  # the accuracy of the graphs that were timed
            dense_metric = _metric_in(runners["dense_onnxruntime"][1], loader, data)
            pruned_eval["metric"] = _metric_in(runners["pruned_onnxruntime"][1], loader, data)
            computed_in = "ONNX Runtime"
    compared = ("dense", "pruned") if backend == "pytorch" else ("dense_onnxruntime", "pruned_onnxruntime")
    result = {
        "task": data.name, "metric_name": data.metric, "metric_label": args.setup["metric_label"],
        "metric_computed_in": computed_in, "backend": backend, "setup": args.setup,
        "evaluated_on": Path(data.source["validation_file"]).name if data.source.get("validation_file") else
        f"{data.name} dev",
        "dense": {"metric": dense_metric, "flops_reduction_unpadded": 1.0, "flops_reduction_padded": 1.0},
        "pruned": {"metric": pruned_eval["metric"],
                   "flops_reduction_unpadded": pruned_eval["flops_reduction_unpadded"],
                   "flops_reduction_padded": pruned_eval["flops_reduction_padded"],
                   "kept_fraction_per_layer": pruned_eval["kept_fraction_per_layer"]},
        "dense_onnxruntime": {f"latency_ms_b{b}": lat["dense_onnxruntime"][b] for b in sizes},
        "protocol": {"threads": args.threads, "repeats": args.repeats, "examples_timed": len(dev),
                     "padding": "dynamic (per batch)", "dense_attention": "sdpa", "statistic": "median of passes",
                     "padded_length": args.padded_length,
                     "compared": f"{runners[compared[0]][0]} vs {runners[compared[1]][0]}"},
        "timings": lat["timings"],
    }
    for b in sizes:
        result["dense"][f"latency_ms_b{b}"] = lat[compared[0]][b]
        result["pruned"][f"latency_ms_b{b}"] = lat[compared[1]][b]
        result[f"speedup_b{b}"] = lat[compared[0]][b] / lat[compared[1]][b]
    if "dense_onnxruntime_int8" in lat:
        result["int8"] = {f"{name}_ms_b{b}": lat[f"{name}_onnxruntime_int8"][b] for name in ("dense", "pruned")
                          for b in sizes}
    return result, kept_fractions


def print_table(result: dict, padded_length: int) -> None:
    sizes = sorted(int(k.rsplit("b", 1)[1]) for k in result["dense"] if k.startswith("latency_ms_b"))
    metric = f"{result.get('metric_label', result['metric_name'])} ({result.get('metric_computed_in', 'PyTorch')})"
    head = f"| model | {metric} | FLOPs red. (unpadded) | FLOPs red. (padded {padded_length}) | "
    head += " | ".join(f"ms b{b}" for b in sizes) + " | " + " | ".join(f"speed-up b{b}" for b in sizes) + " |"
    lines = [f"{result.get('evaluated_on', result['task'] + ' dev')}, {result['protocol']['threads']} threads", head,
             "|" + "---|" * (4 + 2 * len(sizes))]
    ort = result["dense_onnxruntime"]
    dense_ms = {b: result["dense"][f"latency_ms_b{b}"] for b in sizes}
    on_ort = result.get("backend") == "onnxruntime"
    names = ("dense (ONNX Runtime)", "ToP pruned (ONNX Runtime)") if on_ort else ("dense (HF, SDPA)", "ToP pruned")
    for name, row in zip(names, (result["dense"], result["pruned"])):
        lines.append(f"| {name} | {row['metric']:.2f} | {row['flops_reduction_unpadded']:.2f}x | "
                     f"{row['flops_reduction_padded']:.2f}x | "
                     + " | ".join(f"{row[f'latency_ms_b{b}']:.1f}" for b in sizes) + " | "
                     + " | ".join(f"{dense_ms[b] / row[f'latency_ms_b{b}']:.2f}x" for b in sizes) + " |")
    extra = [("dense (ONNX Runtime)", {b: ort[f"latency_ms_b{b}"] for b in sizes})] if not on_ort else []
    for name in ("dense", "pruned") if "int8" in result else ():
        extra.append((f"{name} (ONNX Runtime INT8)", {b: result["int8"][f"{name}_ms_b{b}"] for b in sizes}))
    for name, ms in extra:
        lines.append(f"| {name} | - | - | - | " + " | ".join(f"{ms[b]:.1f}" for b in sizes) + " | "
                     + " | ".join(f"{dense_ms[b] / ms[b]:.2f}x" for b in sizes) + " |")
    print("\n".join(lines))


def cmd_bench(args, data_dir):
    _quiet()
    result, _ = _bench(args.dense, args.pruned, args, data_dir)
    if not args.json:
        print_table(result, args.padded_length)
    return result


def cmd_export(args, data_dir):
    from .export import export_folder

    _quiet()
    folder = export_folder(args.model, args.output, int8=args.int8)
    print(f"wrote {folder}: model.onnx{' + model.int8.onnx' if args.int8 else ''}, tokenizer, toprune_onnx.json "
          f"(checked against PyTorch: max abs diff <= 1e-4)")


def cmd_demo(args, data_dir):
    from .plan import PruningPlan
    from .plots import plot_tokens_per_layer
    from .prune import ToPRun
    from .finetune import finetune_teacher

    _quiet()
    check_writable(args.workdir, "--workdir")
    work = Path(args.workdir) / ("custom" if args.train_file else args.task)
    teacher, top = work / "teacher", work / "top"
    say = (lambda *a: None) if args.json else print
    settings = {k: getattr(args, k) for k in ("model", "task", "teacher_epochs", "target", "convention", "epochs",
                                              "warmup_epochs", "max_train_samples", "max_length", "seed", "bins",
                                              "topk", "no_ranking", "no_layer_gates", "monotone", "train_file")}
    # later options join the fingerprint only when set, so demos recorded before them still match
    later = {"method": "top", "hard_epochs": 0.0, "scorer": "attention", "rank_target": "attention",
             "rank_layers": None, "no_fit_plan": False, "score_radius": 0, "rank_alpha": 0.01, "task_type": None,
             "select_on": "dev"}  # demos before held-out selection selected on dev
    settings |= {k: getattr(args, k) for k, default in later.items() if getattr(args, k, default) != default}
    recorded = work / "demo_settings.json"
    if recorded.is_file() and read_json(recorded) != settings:
        raise ToPruneError(f"{work} holds a demo made with other settings; pass another --workdir or delete it")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(recorded, json.dumps(settings, indent=1) + "\n")
    teacher_json = teacher / "toprune_teacher.json"
    if teacher_json.is_file():
        say(f"[1/4] teacher: reusing {teacher}")
        teacher_result = read_json(teacher_json)
    else:
        say(f"[1/4] teacher: fine-tuning {args.model} on {args.task or Path(args.train_file).name} "
            f"({args.teacher_epochs} epochs)")
        teacher_result = finetune_teacher(args.model, args.task, data_dir, teacher, epochs=args.teacher_epochs,
                                          max_length=args.max_length, max_train_samples=args.max_train_samples,
                                          seed=args.seed, log=say, select_on=args.select_on, overwrite=True,
                                          **_user_files(args))
    summary_json = top / "summary.json"
    if summary_json.is_file() and (top / "best").is_dir():
        say(f"[2/4] ToP: reusing {top}")
    else:
        say(f"[2/4] ToP: pruning to {args.target} ({args.convention}), {args.epochs} epochs")
        args.resume = args.overwrite = True  # the demo's own folder: a killed demo continues where it stopped
        ToPRun(_prune_config(args, str(teacher), str(top), data_dir), log=say).run()
    if not (top / "best").is_dir():
        raise ToPruneError("the pruning run met the target at no evaluation; try more --epochs or a lower --target")
    say("[3/4] evaluating and [4/4] timing dense vs pruned")
    result, kept = _bench(str(teacher), str(top / "best"), args, data_dir, dense_metric=teacher_result["metric"],
                          say=False)  # the setup was said by the steps above
    plan = PruningPlan.load(top / "best")
    reduction = result["pruned"]["flops_reduction_unpadded"]
    plot = plot_tokens_per_layer(plan, kept, work / "tokens_per_layer.png",
                                 f"{result['task']}: tokens entering each layer (ToP, {reduction:.2f}x FLOPs "
                                 "reduction, unpadded)")
    result["plot"] = str(plot)
    atomic_write_text(work / "demo.json", json.dumps(result, indent=1) + "\n")
    if not args.json:
        print_table(result, args.padded_length)
        print(f"plot of tokens kept per layer: {plot}; all numbers: {work / 'demo.json'}")
    return result


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
        points = [{"step": r["step"], "metric": r[f"{key}metric"],
                   "flops_reduction_unpadded": r[f"{key}flops_reduction_unpadded"]} for r in records
                  if f"{key}metric" in r]
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
    plot_run_history(runs, args.output, label, reference,
                     title=f"{label}: every evaluation of {', '.join(r['name'] for r in runs)}")
    count = sum(len(r["points"]) for r in runs)
    print(f"wrote {args.output} ({count} evaluations from {len(runs)} runs; teacher line: "
          f"{'none found' if reference is None else f'{reference:.2f}'}; kept checkpoints starred)")
    for run in args.runs:
        if (Path(run) / "tokens_per_layer.png").is_file():
            print(f"tokens kept per layer of {run}'s kept model: {Path(run) / 'tokens_per_layer.png'}")
    return {"plot": str(args.output), "runs": runs, "teacher_metric": reference, "metric_label": label}


def cmd_show(args, data_dir):
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
    batch = tokenizer(args.text, args.pair, return_tensors="pt", truncation=True, max_length=max_length) \
        if args.pair else tokenizer(args.text, return_tensors="pt", truncation=True, max_length=max_length)
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


def cmd_profile(args, data_dir):
    import torch

    from .constraint import cached_profile_path
    from .costmodel import profile_key
    from .pretrained import load_model
    from .profile import check_predictions, profile

    _quiet()
    model = load_model(args.model)
    threads = args.threads or torch.get_num_threads()
    cost = profile(model, args.backend, args.batch_size, threads, max_tokens=args.max_tokens)
    cached = cost.save(cached_profile_path(profile_key(model, args.backend, args.batch_size, threads)))
    if args.output:
        cost.save(args.output)
    result = {"profile": cost.__dict__ | {"cached_at": str(cached)}}
    if args.check_plans:
        result["check"] = check_predictions(model, cost, args.check_plans, args.max_tokens)
    if not args.json:
        a0, a1, a2 = cost.attention
        print(f"{cost.key['machine']}: {args.backend}, batch {args.batch_size}, {threads} threads")
        print(f"per layer: attention {a0:.3f} + {a1:.4f} n + {a2:.6f} n^2 ms, FFN {cost.ffn[0]:.3f} + "
              f"{cost.ffn[1]:.4f} n ms; fixed {cost.fixed:.3f} ms; pruning overhead {cost.prune_overhead:.3f} ms")
        if "check" in result:
            print(f"{args.check_plans} random plans: median |predicted - measured| / measured = "
                  f"{result['check']['median_abs_error']:.1%}")
        print(f"saved: {cached}" + (f" and {args.output}" if args.output else ""))
    return result
