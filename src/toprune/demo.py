"""``toprune demo``: teacher -> prune -> eval -> bench on the default model, one table (a killed demo resumes)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ToPruneError
from .runfolder import read_json
from .safeio import atomic_write_text, check_writable


def demo_fingerprint(args) -> dict:
    """The settings a demo folder was made with (a later demo with others refuses to reuse it)."""
    from .config_options import option_default

    settings = {
        k: getattr(args, k)
        for k in (
            "model",
            "task",
            "teacher_epochs",
            "target",
            "convention",
            "epochs",
            "warmup_epochs",
            "max_train_samples",
            "max_length",
            "seed",
            "bins",
            "topk",
            "no_ranking",
            "no_layer_gates",
            "monotone",
            "train_file",
        )
    }
    # later options join the fingerprint only when they differ from the config's default, so demos recorded
    # before them still match
    for name in (
        "method",
        "hard_epochs",
        "scorer",
        "rank_target",
        "rank_layers",
        "no_fit_plan",
        "score_radius",
        "rank_alpha",
        "merge",
    ):
        if getattr(args, name) not in (None, option_default(name)):
            settings[name] = getattr(args, name)
    if args.task_type is not None:
        settings["task_type"] = args.task_type
    if args.select_on != "dev":  # demos before held-out selection selected on dev
        settings["select_on"] = args.select_on
    return settings


def cmd_demo(args, data_dir):
    from .commands import _bench, _prune_config, _quiet, _user_files, print_table
    from .plan import PruningPlan
    from .plots import plot_tokens_per_layer
    from .prune import ToPRun
    from .finetune import finetune_teacher

    _quiet()
    check_writable(args.workdir, "--workdir")
    work = Path(args.workdir) / ("custom" if args.train_file else args.task)
    teacher, top = work / "teacher", work / "top"
    say = (lambda *a: None) if args.json else print
    settings = demo_fingerprint(args)
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
        say(
            f"[1/4] teacher: fine-tuning {args.model} on {args.task or Path(args.train_file).name} "
            f"({args.teacher_epochs} epochs)"
        )
        teacher_result = finetune_teacher(
            args.model,
            args.task,
            data_dir,
            teacher,
            epochs=args.teacher_epochs,
            max_length=args.max_length,
            max_train_samples=args.max_train_samples,
            seed=args.seed,
            log=say,
            select_on=args.select_on,
            overwrite=True,
            **_user_files(args),
        )
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
    args.int8 = True  # dense INT8 in ONNX Runtime is what a CPU user already runs; the pruned INT8 row beside it
    result, kept = _bench(
        str(teacher), str(top / "best"), args, data_dir, dense_metric=teacher_result["metric"], say=False
    )  # the setup was said by the steps above
    plan = PruningPlan.load(top / "best")
    reduction = result["pruned"]["flops_reduction_unpadded"]
    plot = plot_tokens_per_layer(
        plan,
        kept,
        work / "tokens_per_layer.png",
        f"{result['task']}: tokens entering each layer (ToP, {reduction:.2f}x FLOPs reduction, unpadded)",
    )
    result["plot"] = str(plot)
    atomic_write_text(work / "demo.json", json.dumps(result, indent=1) + "\n")
    if not args.json:
        print_table(result, args.padded_length)
        print(f"plot of tokens kept per layer: {plot}; all numbers: {work / 'demo.json'}")
    return result
