"""What each ``toprune`` subcommand does (the parser is in cli.py); each returns its JSON-able result."""

from __future__ import annotations

from pathlib import Path

from .errors import ToPruneError


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
        data = prepare_data(
            tokenizer, args.task, data_dir, args.max_length, seed=args.seed, dev_only=True, **_user_files(args)
        )
    args.setup = setup_facts(data, max_length=args.max_length)
    if getattr(args, "data_recorded", False):
        args.setup["data"]["note"] = f", as recorded in {Path(model_path) / 'toprune_task.json'}"
    for line in setup_lines(args.setup) if say else ():
        print(line, file=sys.stderr if getattr(args, "json", False) else sys.stdout)
    return tokenizer, data, make_loader(data.dev, tokenizer, 64, False)


def _user_files(args) -> dict:
    return {
        "train_file": args.train_file,
        "validation_file": args.validation_file,
        "text_columns": args.text_columns,
        "label_column": args.label_column,
        "task_type": args.task_type,
    }


def cmd_finetune(args, data_dir):
    from .finetune import finetune_teacher

    _quiet()
    return finetune_teacher(
        args.model,
        args.task,
        data_dir,
        args.output,
        epochs=args.epochs,
        lr=args.lr,
        max_length=args.max_length,
        max_train_samples=args.max_train_samples,
        seed=args.seed,
        select_on=args.select_on,
        resume=args.resume,
        overwrite=args.overwrite,
        **_user_files(args),
    )


def _prune_config(args, teacher: str, output: str, data_dir):
    from .config_options import config_values
    from .prune_config import PruneConfig

    return PruneConfig(
        teacher=teacher,
        task=args.task,
        data_dir=data_dir,
        output_dir=output,
        max_length=args.max_length,
        seed=args.seed,
        select_on=args.select_on,
        overwrite=getattr(args, "overwrite", False),
        **config_values(args),
        **_user_files(args),
    )


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
        print(
            f"{data.name} ({len(data.qa.examples)} questions in {len(data.dev)} windows of {args.max_length}; "
            f"{data.qa.split}): EM {result['exact']:.2f}, F1 {result['f1']:.2f}"
        )
        if "f1_excluding_pruned" in result:
            print(
                "  with pruned positions excluded from answer boundaries: "
                f"EM {result['exact_excluding_pruned']:.2f}, F1 {result['f1_excluding_pruned']:.2f}"
            )
    elif not args.json:
        print(f"{args.setup['metric_label']} ({len(data.dev)} examples): {result['metric']:.2f}")
    if not args.json:
        print(
            f"FLOPs reduction: {result['flops_reduction_unpadded']:.2f}x vs dense unpadded, "
            f"{result['flops_reduction_padded']:.2f}x vs dense padded to {args.padded_length}"
        )
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
        raise ToPruneError(
            f"--dense {dense_path} and --pruned {pruned_path} are different architectures; compare "
            f"a pruned model with the dense teacher it was pruned from"
        )
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
        lat = compare_latency(
            runners, tokenizer, list(dev["text_a"]), texts_b, sizes, args.repeats, max_length=args.max_length
        )
        computed_in = "PyTorch"
        if backend == "onnxruntime" and data.kind != "qa":  # the accuracy of the graphs that were timed
            dense_metric = _metric_in(runners["dense_onnxruntime"][1], loader, data)
            pruned_eval["metric"] = _metric_in(runners["pruned_onnxruntime"][1], loader, data)
            computed_in = "ONNX Runtime"
    compared = ("dense", "pruned") if backend == "pytorch" else ("dense_onnxruntime", "pruned_onnxruntime")
    result = {
        "task": data.name,
        "metric_name": data.metric,
        "metric_label": args.setup["metric_label"],
        "metric_computed_in": computed_in,
        "backend": backend,
        "setup": args.setup,
        "evaluated_on": Path(data.source["validation_file"]).name
        if data.source.get("validation_file")
        else f"{data.name} dev",
        "dense": {"metric": dense_metric, "flops_reduction_unpadded": 1.0, "flops_reduction_padded": 1.0},
        "pruned": {
            "metric": pruned_eval["metric"],
            "flops_reduction_unpadded": pruned_eval["flops_reduction_unpadded"],
            "flops_reduction_padded": pruned_eval["flops_reduction_padded"],
            "kept_fraction_per_layer": pruned_eval["kept_fraction_per_layer"],
        },
        "dense_onnxruntime": {f"latency_ms_b{b}": lat["dense_onnxruntime"][b] for b in sizes},
        "protocol": {
            "threads": args.threads,
            "repeats": args.repeats,
            "examples_timed": len(dev),
            "padding": "dynamic (per batch)",
            "dense_attention": "sdpa",
            "statistic": "median of passes (the rows' passes interleaved)",
            "padded_length": args.padded_length,
            "compared": f"{runners[compared[0]][0]} vs {runners[compared[1]][0]}",
        },
        "timings": lat["timings"],
    }
    for b in sizes:
        result["dense"][f"latency_ms_b{b}"] = lat[compared[0]][b]
        result["pruned"][f"latency_ms_b{b}"] = lat[compared[1]][b]
        result[f"speedup_b{b}"] = lat[compared[0]][b] / lat[compared[1]][b]
    if "dense_onnxruntime_int8" in lat:
        result["int8"] = {
            f"{name}_ms_b{b}": lat[f"{name}_onnxruntime_int8"][b] for name in ("dense", "pruned") for b in sizes
        }
    return result, kept_fractions


def print_table(result: dict, padded_length: int) -> None:
    sizes = sorted(int(k.rsplit("b", 1)[1]) for k in result["dense"] if k.startswith("latency_ms_b"))
    metric = f"{result.get('metric_label', result['metric_name'])} ({result.get('metric_computed_in', 'PyTorch')})"
    head = f"| model | {metric} | FLOPs red. (unpadded) | FLOPs red. (padded {padded_length}) | "
    head += " | ".join(f"ms b{b}" for b in sizes) + " | " + " | ".join(f"speed-up b{b}" for b in sizes) + " |"
    lines = [
        f"{result.get('evaluated_on', result['task'] + ' dev')}, {result['protocol']['threads']} threads",
        head,
        "|" + "---|" * (4 + 2 * len(sizes)),
    ]
    ort = result["dense_onnxruntime"]
    dense_ms = {b: result["dense"][f"latency_ms_b{b}"] for b in sizes}
    on_ort = result.get("backend") == "onnxruntime"
    names = ("dense (ONNX Runtime)", "ToP pruned (ONNX Runtime)") if on_ort else ("dense (HF, SDPA)", "ToP pruned")
    for name, row in zip(names, (result["dense"], result["pruned"])):
        lines.append(
            f"| {name} | {row['metric']:.2f} | {row['flops_reduction_unpadded']:.2f}x | "
            f"{row['flops_reduction_padded']:.2f}x | "
            + " | ".join(f"{row[f'latency_ms_b{b}']:.1f}" for b in sizes)
            + " | "
            + " | ".join(f"{dense_ms[b] / row[f'latency_ms_b{b}']:.2f}x" for b in sizes)
            + " |"
        )
    extra = [("dense (ONNX Runtime)", {b: ort[f"latency_ms_b{b}"] for b in sizes})] if not on_ort else []
    for name in ("dense", "pruned") if "int8" in result else ():
        extra.append((f"{name} (ONNX Runtime INT8)", {b: result["int8"][f"{name}_ms_b{b}"] for b in sizes}))
    for name, ms in extra:
        lines.append(
            f"| {name} | - | - | - | "
            + " | ".join(f"{ms[b]:.1f}" for b in sizes)
            + " | "
            + " | ".join(f"{dense_ms[b] / ms[b]:.2f}x" for b in sizes)
            + " |"
        )
    if "int8" in result:
        lines.append("\nINT8 rows: latency only; their dev metric: `toprune export --int8` or `toprune frontier`")
    print("\n".join(lines))


def cmd_bench(args, data_dir):
    _quiet()
    result, _ = _bench(args.dense, args.pruned, args, data_dir)
    if not args.json:
        print_table(result, args.padded_length)
    return result


def cmd_export(args, data_dir):
    from .export import export_command

    _quiet()
    export_command(args, data_dir)


def cmd_frontier(args, data_dir):
    from .frontier import cmd_frontier

    _quiet()
    return cmd_frontier(args, data_dir)


# commands kept in modules of their own; cli.py finds every cmd_* here
from .commands_profile import cmd_profile  # noqa: E402,F401
from .commands_view import cmd_plot, cmd_show  # noqa: E402,F401
from .demo import cmd_demo, demo_fingerprint  # noqa: E402,F401
