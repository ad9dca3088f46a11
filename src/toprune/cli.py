"""``toprune``: fine-tune a teacher, prune it with ToP, evaluate, benchmark, or do it all (``demo``).

Exit codes: 0 success; 2 a user error (bad option, file, folder or data), one line on stderr naming it; 1 a bug in
toprune, one line asking for a report; 130 interrupted (Ctrl-C or SIGTERM, same message). Nothing prints a
traceback unless ``TOPRUNE_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import threading
from pathlib import Path

from .cli_types import HelpFormatter, Parser, int_list, positive_float, positive_int, seed_int
from .errors import ToPruneError
from .validate import DEFAULT_SEED
from .quantize import VARIANTS as INT8_VARIANTS  # torch-free

EXAMPLES = {
    "finetune": "toprune finetune --task mrpc --output runs/mrpc-teacher",
    "prune": "toprune prune --teacher runs/mrpc-teacher --task mrpc --target 2x --output runs/mrpc-top",
    "eval": "toprune eval runs/mrpc-top/best --task mrpc",
    "bench": "toprune bench --dense runs/mrpc-teacher --pruned runs/mrpc-top/best --task mrpc --json",
    "export": "toprune export runs/mrpc-top/best --output exports/mrpc-top   # then: toprune.serve.OnnxModel",
    "demo": "toprune demo            # MiniLM + MRPC: teacher -> prune -> eval -> bench, one table",
    "plot": "toprune plot runs/mrpc-top runs/mrpc-top-no-rank --output mrpc.png",
    "profile": "toprune profile runs/stsb-teacher --task stsb --backend onnxruntime --output stsb-ort-b1.json",
    "show": 'toprune show runs/mrpc-top/best "The cat sat on the mat." --pair "A cat was sitting." --html s.html',
    "frontier": "toprune frontier --task mrpc --dense runs/mrpc-teacher --pruned runs/mrpc-top/best runs/mrpc-st/best",
}


def _select_option(p) -> None:
    from .selection import HELDOUT_FRACTION, SELECT_ON

    p.add_argument(
        "--select-on",
        choices=SELECT_ON,
        default=SELECT_ON[0],
        help=f"where checkpoints are chosen: 'heldout' (default), a fixed {HELDOUT_FRACTION:g} slice of "
        "the training data the run never trains on, dev evaluated once at the end; 'dev' selects on "
        "the reported dev set (the paper's convention, optimistic)",
    )


def _data_dir(args) -> str | None:
    from .data import default_glue_dir

    given = getattr(args, "data_dir", None)
    if given:
        if not Path(given).is_dir():
            raise ToPruneError(f"--data-dir {given} is not a folder")
        return given
    found = default_glue_dir()
    return str(found) if found else None  # None: the hub dataset (fails with a one-line hint when offline)


# where a model's saved task (toprune_task.json) fills in the option, the help says so
_TASK_DEFAULT = {
    "finetune": "mrpc; with --train-file: your files' own task",
    "prune": "the teacher's task (its toprune_task.json, which also gives your files back), else mrpc",
    "eval": "the model's task (its toprune_task.json), else mrpc",
    "bench": "the pruned model's task (its toprune_task.json), else mrpc",
    "demo": "mrpc; with --train-file: your files' own task",
}


def _common(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument(
        "--task",
        help="GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli), squad / squad_v2, or "
        f"embedding (prune only) (default: {_TASK_DEFAULT[command]})",
    )
    p.add_argument(
        "--data-dir",
        help="folder in the GLUE TSV layout (default: ../shared/data/glue if it exists, else the hub dataset)",
    )
    saved = command in ("prune", "eval", "bench")
    p.add_argument(
        "--max-length",
        type=positive_int,
        help="truncation length; SQuAD: the window length (default: "
        + ("the length the model was trained at (toprune_task.json), else " if saved else "")
        + "128, SQuAD 384)",
    )
    p.add_argument("--seed", type=seed_int, default=DEFAULT_SEED, help="random seed (data order, subsets, gates)")
    own = p.add_argument_group("your own data (instead of --task): CSV, TSV or JSON Lines, like run_glue.py")
    own.add_argument("--train-file", help="labelled training file; its labels, sorted, become the ids 0..n-1")
    own.add_argument("--validation-file", help="labelled dev file (evaluated; same columns as --train-file)")
    own.add_argument(
        "--text-columns",
        help="one or two comma-separated column names (default: inferred: "
        "sentence1,sentence2 / text_a,text_b / question,sentence / "
        "premise,hypothesis / sentence / text, else the one or two other "
        "string columns)",
    )
    own.add_argument("--label-column", help="default: inferred (label, labels, score, target)")
    own.add_argument(
        "--task-type",
        choices=["classification", "regression"],
        help="what the labels are (default: inferred; numeric labels with more than 10 distinct values are regression)",
    )
    if command in ("eval", "bench"):
        own.add_argument(
            "--data",
            metavar="FILE",
            help="for a model that carries its task (toprune_task.json, written by finetune and "
            "prune): the labelled file to evaluate on, read with the saved columns and label ids; "
            "no --train-file needed (default: the validation file recorded there, if still "
            "present)",
        )


def _prune_options(p: argparse.ArgumentParser) -> None:
    from .config_options import add_config_options

    _select_option(p)
    add_config_options(p)  # every option of PruneConfig, with its default, choices and help


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="toprune",
        description=__doc__.splitlines()[0],
        epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()),
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def command(name, help_text):
        return sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"example:\n  {EXAMPLES[name]}",
            formatter_class=HelpFormatter,
        )

    p = command("finetune", "fine-tune the dense teacher on a task")
    _common(p, "finetune")
    p.add_argument("--model", default="minilm", help="'minilm' (packaged), a local HF folder or a hub id")
    p.add_argument(
        "--epochs",
        type=positive_float,
        help="schedule length (default: the task's searched recipe, toprune.recipes; else 3; the time is "
        "estimated after the first 10 steps)",
    )
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default: the task's recipe; else 5e-5)")
    p.add_argument(
        "--max-train-samples",
        type=positive_int,
        help="train on a seeded random subset of this many examples (default: all)",
    )
    _select_option(p)
    p.add_argument(
        "--output",
        required=True,
        help="model folder to write (HF weights, tokenizer, toprune_task.json, toprune_teacher.json)",
    )
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last epoch's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --output (else it refuses)")

    p = command("prune", "ToP pruning of a fine-tuned teacher to a FLOPs target")
    _common(p, "prune")
    p.add_argument("--teacher", required=True, help="fine-tuned dense model folder (from `toprune finetune`)")
    p.add_argument("--output", required=True, help="run folder; the kept model is written to OUTPUT/best")
    _prune_options(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in --output (without it, a fresh run there refuses)",
    )

    p = command("eval", "dev metric, FLOPs reduction (both conventions) and tokens kept per layer")
    p.add_argument("model", help="model folder (pruned or dense)")
    _common(p, "eval")
    p.add_argument(
        "--padded-length", type=positive_int, help="length of the padded-FLOPs convention (default: --max-length)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (the setup goes to stderr)")

    p = command("bench", "latency of dense vs pruned on real dev inputs (plus dense ONNX Runtime)")
    _common(p, "bench")
    p.add_argument("--dense", required=True, help="the dense model folder (the teacher)")
    p.add_argument("--pruned", required=True, help="the pruned model folder (a run's best/)")
    p.add_argument(
        "--padded-length", type=positive_int, help="length of the padded-FLOPs convention (default: --max-length)"
    )
    p.add_argument(
        "--backend",
        choices=["pytorch", "onnxruntime"],
        default="pytorch",
        help="pytorch: dense HF eager (SDPA) vs our PyTorch runtime, plus the dense ONNX Runtime row; "
        "onnxruntime: both models exported to ONNX and timed in ONNX Runtime",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also time both models' INT8 ONNX Runtime graphs (toprune.quantize's default variant)",
    )
    _bench_options(p)

    p = command("export", "write an ONNX serving folder (graph + tokenizer + config) of a pruned or dense model")
    p.add_argument("model", help="model folder (pruned or dense)")
    p.add_argument("--output", required=True, help="folder to write model.onnx, the tokenizer and toprune_onnx.json")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx: the INT8 variant that scores "
        "best on the held-out training slice (dev metric of fp32 and INT8 printed)",
    )
    p.add_argument(
        "--int8-variant",
        default="auto",
        choices=["auto", *INT8_VARIANTS],
        help="with --int8: auto (measure all) or one variant (toprune.quantize)",
    )
    # its own dest: the saved-task defaults (mrpc for a model without one) must not pick the data INT8 is chosen on
    p.add_argument(
        "--task",
        dest="int8_task",
        help="GLUE task whose training data chooses the INT8 variant (default: the model's saved task)",
    )
    p.add_argument("--data-dir", help="GLUE folder (default: ../shared/data/glue when present)")

    p = command("demo", "the main job: teacher -> prune -> eval -> bench on the default model, one table")
    _common(p, "demo")
    p.add_argument("--model", default="minilm", help="'minilm' (packaged), a local HF folder or a hub id")
    p.add_argument("--workdir", default="runs/demo", help="kept between runs: a killed demo resumes")
    _prune_options(p)
    # fits the 15-minute budget on 2 cores; 2x needs a longer schedule (see benchmarks/README.md)
    p.set_defaults(epochs=2.0, warmup_epochs=1.0, target="1.5x")
    p.add_argument("--teacher-epochs", type=positive_float, default=2.0, help="epochs of the teacher's fine-tuning")
    _bench_options(p)

    p = command("plot", "metric vs FLOPs reduction of every evaluation of one or more pruning runs")
    p.add_argument("runs", nargs="+", help="run folders (from `toprune prune`), each with metrics.jsonl")
    p.add_argument("--output", default="metric_vs_flops.png", help="image file to write")

    from .commands_profile import add_arguments as profile_arguments

    profile_arguments(
        command("profile", "measure this machine: a latency cost model of the encoder for --constraint latency")
    )

    from .frontier import add_arguments as frontier_arguments

    frontier_arguments(
        command(
            "frontier",
            "accuracy vs latency of dense, pruned and INT8 models in PyTorch, ONNX "
            "Runtime and OpenVINO: json, table and plot",
        )
    )

    p = command("show", "which words of one input survive at each layer (terminal, or --html)")
    p.add_argument("model", help="pruned model folder")
    p.add_argument("text", help="the input (the first text of a pair)")
    p.add_argument("--pair", help="second text of a sentence pair")
    p.add_argument("--html", help="also write an HTML view to this file")
    return parser


def _bench_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-sizes", type=int_list, default=[1, 32], help="comma-separated (default: 1,32)")
    p.add_argument("--threads", type=positive_int, default=2, help="intra-op threads, PyTorch and ONNX Runtime")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed passes; the median is reported")
    p.add_argument("--examples", type=positive_int, default=256, help="first N dev examples are timed")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run(args) -> int:
    from . import commands
    from .data import glue_task
    from .squad import is_squad
    from .prune_config import task_defaults
    from .task_spec import apply_saved_task

    apply_saved_task(args)  # --task, --max-length, columns and data from the model's toprune_task.json
    squad = is_squad(getattr(args, "task", None))
    embedding = getattr(args, "task", None) == "embedding"
    if embedding and getattr(args, "command", "") != "prune":
        raise ToPruneError("--task embedding is for `toprune prune` (the teacher is the embedding model itself)")
    if embedding and not args.train_file:  # before any model is loaded
        raise ToPruneError("--task embedding needs --train-file: a .txt/CSV/JSON Lines file or glue:TASK")
    if getattr(args, "task", None) and not squad and not embedding and not getattr(args, "train_file", None):
        glue_task(args.task)  # fail on a typo before loading anything
    if hasattr(args, "max_length"):  # the same task defaults as PruneConfig's
        args.max_length, padded = task_defaults(args.task, args.max_length, getattr(args, "padded_length", None))
        if hasattr(args, "padded_length"):
            args.padded_length = padded
    if getattr(args, "padded_length", None) and args.padded_length < args.max_length:
        raise ToPruneError(
            f"--padded-length {args.padded_length} is shorter than --max-length {args.max_length}: "
            f"inputs would be longer than the padded reference"
        )
    if getattr(args, "command", "") == "prune" and args.resume and args.overwrite:
        raise ToPruneError("--resume continues the run in --output, --overwrite replaces it: pass one of them")
    handler = getattr(commands, f"cmd_{args.command}")
    result = handler(args, _data_dir(args))
    if getattr(args, "json", False) and result is not None:
        print(json.dumps(result, indent=1))
    return 0


_USER_OS_ERRORS = {
    errno.ENOSPC,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.EDQUOT,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
}


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # `kill` gets what Ctrl-C gets: checkpoints intact, one line, exit 130


def _end_progress_bars() -> None:
    """A bar cut short by an error ends its line first, so the one-line message starts a line of its own."""
    if "tqdm" in sys.modules:
        for bar in list(getattr(sys.modules["tqdm"].tqdm, "_instances", ())):
            bar.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse's own errors: usage + one line, exit 2
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if on_main_thread else None
    try:
        return run(args)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 every failure gets the contract in _report
        _end_progress_bars()
        return _report(exc)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _report(exc: BaseException) -> int:
    """The exit-code contract: 2 and one line for a user error, 130 interrupted, 1 and a hint for a bug."""
    if isinstance(exc, ToPruneError):
        print(f"toprune: error: {_first_line(exc)}", file=sys.stderr)
        return 2
    if isinstance(exc, KeyboardInterrupt):
        print("toprune: interrupted (runs resume with --resume; the demo resumes by itself)", file=sys.stderr)
        return 130
    if isinstance(exc, OSError) and exc.errno in _USER_OS_ERRORS and not os.environ.get("TOPRUNE_DEBUG"):
        where = f"{exc.filename}: " if exc.filename else ""  # the machine said no (full disk, permissions)
        print(f"toprune: error: {where}{exc.strerror}", file=sys.stderr)
        return 2
    return _internal_error(exc)  # a bug, not a user mistake: still one line, with how to see the traceback


def _internal_error(exc: Exception) -> int:
    if os.environ.get("TOPRUNE_DEBUG"):
        raise exc
    print(
        f"toprune: internal error (a bug in toprune, please report it with the command and the output of "
        f"TOPRUNE_DEBUG=1): {type(exc).__name__}: {_first_line(exc)}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
