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

from .errors import ToPruneError

EXAMPLES = {
    "finetune": "toprune finetune --task mrpc --output runs/mrpc-teacher",
    "prune": "toprune prune --teacher runs/mrpc-teacher --task mrpc --target 2x --output runs/mrpc-top",
    "eval": "toprune eval runs/mrpc-top/best --task mrpc",
    "bench": "toprune bench --dense runs/mrpc-teacher --pruned runs/mrpc-top/best --task mrpc --json",
    "export": "toprune export runs/mrpc-top/best --output exports/mrpc-top   # then: toprune.serve.OnnxModel",
    "demo": "toprune demo            # MiniLM + MRPC: teacher -> prune -> eval -> bench, one table",
    "plot": "toprune plot runs/mrpc-top runs/mrpc-top-no-rank --output mrpc.png",
    "profile": "toprune profile runs/mrpc-teacher --batch-size 1 --output mrpc-b1.json",
    "show": "toprune show runs/mrpc-top/best \"The cat sat on the mat.\" --pair \"A cat was sitting.\" --html s.html",
}


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def seed_int(text: str) -> int:
    from .validate import MAX_SEED

    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..{MAX_SEED}, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def _ints(text: str, minimum: int, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,32, got {text!r}") from None
    if any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(f"expected {what} integers, got {text!r}")
    return values


def _select_option(p) -> None:
    from .selection import HELDOUT_FRACTION, SELECT_ON

    p.add_argument("--select-on", choices=SELECT_ON, default="heldout",
                   help=f"where checkpoints are chosen: 'heldout' (default), a fixed {HELDOUT_FRACTION:g} slice of "
                        "the training data the run never trains on, dev evaluated once at the end; 'dev' selects on "
                        "the reported dev set (the paper's convention, optimistic)")


def int_list(text: str) -> list[int]:
    return _ints(text, 1, "positive")


def index_list(text: str) -> list[int]:
    """Layer indices: 0 allowed."""
    return _ints(text, 0, "non-negative")


def _data_dir(args) -> str | None:
    from .data import default_glue_dir

    given = getattr(args, "data_dir", None)
    if given:
        if not Path(given).is_dir():
            raise ToPruneError(f"--data-dir {given} is not a folder")
        return given
    found = default_glue_dir()
    return str(found) if found else None  # None: the hub dataset (fails with a one-line hint when offline)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter, where there is a default to show and the help does not already
    say it (a None default is explained in words: "default: inferred", "the model's task", ...)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


# where a model's saved task (toprune_task.json) fills in the option, the help says so
_TASK_DEFAULT = {
    "finetune": "mrpc; with --train-file: your files' own task",
    "prune": "the teacher's task (its toprune_task.json, which also gives your files back), else mrpc",
    "eval": "the model's task (its toprune_task.json), else mrpc",
    "bench": "the pruned model's task (its toprune_task.json), else mrpc",
    "demo": "mrpc; with --train-file: your files' own task",
}


def _common(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--task",
                   help="GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli), squad / squad_v2, or "
                        f"embedding (prune only) (default: {_TASK_DEFAULT[command]})")
    p.add_argument("--data-dir", help="folder in the GLUE TSV layout (default: ../shared/data/glue if it exists, "
                                      "else the hub dataset)")
    saved = command in ("prune", "eval", "bench")
    p.add_argument("--max-length", type=positive_int,
                   help="truncation length; SQuAD: the window length (default: "
                        + ("the length the model was trained at (toprune_task.json), else " if saved else "")
                        + "128, SQuAD 384)")
    p.add_argument("--seed", type=seed_int, default=57, help="random seed (data order, subsets, gates)")
    own = p.add_argument_group("your own data (instead of --task): CSV, TSV or JSON Lines, like run_glue.py")
    own.add_argument("--train-file", help="labelled training file; its labels, sorted, become the ids 0..n-1")
    own.add_argument("--validation-file", help="labelled dev file (evaluated; same columns as --train-file)")
    own.add_argument("--text-columns", help="one or two comma-separated column names (default: inferred: "
                                            "sentence1,sentence2 / text_a,text_b / question,sentence / "
                                            "premise,hypothesis / sentence / text, else the one or two other "
                                            "string columns)")
    own.add_argument("--label-column", help="default: inferred (label, labels, score, target)")
    own.add_argument("--task-type", choices=["classification", "regression"],
                     help="what the labels are (default: inferred; numeric labels with more than 10 distinct values "
                          "are regression)")
    if command in ("eval", "bench"):
        own.add_argument("--data", metavar="FILE",
                         help="for a model that carries its task (toprune_task.json, written by finetune and "
                              "prune): the labelled file to evaluate on, read with the saved columns and label ids; "
                              "no --train-file needed (default: the validation file recorded there, if still "
                              "present)")


def _prune_options(p: argparse.ArgumentParser) -> None:
    _select_option(p)
    latency = p.add_argument_group("latency constraint [ours]: the target is a speed-up on this machine")
    latency.add_argument("--constraint", choices=["flops", "latency"], default="flops",
                         help="what --target counts: FLOPs (the paper) or latency predicted by a measured profile "
                              "of this machine (`toprune profile`; measured and cached if none); default %(default)s")
    latency.add_argument("--inference-batch-size", type=positive_int, default=1,
                         help="latency: the batch size the model will serve at (default %(default)s)")
    latency.add_argument("--inference-backend", choices=["pytorch"], default="pytorch",
                         help="latency: the runtime it will serve in (default %(default)s)")
    latency.add_argument("--inference-threads", type=positive_int,
                         help="latency: intra-op threads at serving time (default: torch's default here)")
    latency.add_argument("--latency-profile", help="a saved `toprune profile` JSON to use instead of measuring")
    p.add_argument("--target", default="2x",
                   help="FLOPs reduction ('2.5x') or sparsity ('0.6') of the whole encoder, measured against the "
                        "dense model on the same inputs (see --convention), or with --constraint latency a predicted "
                        "speed-up: a checkpoint is kept only if its reduction on the selection set meets it "
                        "(default: %(default)s)")
    p.add_argument("--convention", choices=["unpadded", "padded"], default="unpadded",
                   help="what the target is measured against: the dense model on each example's real tokens "
                        "(unpadded, honest) or on inputs padded to --padded-length (the paper's convention)")
    p.add_argument("--padded-length", type=positive_int,
                   help="length of the padded-FLOPs convention (default: --max-length)")
    p.add_argument("--epochs", type=positive_float, default=5.0,
                   help="training epochs (the time is estimated after the first 10 steps)")
    p.add_argument("--warmup-epochs", type=positive_float, default=2.0, help="the target ramps up over these epochs")
    p.add_argument("--hard-epochs", type=non_negative_float, default=0.0,
                   help="[ours] the last epochs train with the learned plan frozen and tokens really removed, as at "
                        "inference (the soft masks keep partly masked tokens alive); recommended for QA. Default 0: "
                        "the authors' schedule")
    p.add_argument("--lr", type=positive_float, default=5e-5, help="learning rate of the weights (linear decay)")
    p.add_argument("--gate-lr", type=positive_float, default=0.05, help="learning rate of the gate logits")
    p.add_argument("--lambda-lr", type=positive_float, default=0.05,
                   help="learning rate of the Lagrange multipliers (lower: a gentler approach to the target)")
    p.add_argument("--pruning-layers", type=int_list,
                   help="comma-separated layers whose input may be pruned; layer 0 always sees every token. Default: "
                        f"from round(L/6) on: {_layers(6)} of a 6-layer model (MiniLM), {_layers(12)} of 12. With "
                        "layer gates (the default) the learned plan may leave some of them dense: the run prints "
                        "and saves the keep ratio of every layer")
    p.add_argument("--bins", type=positive_int, default=20, help="rank bins per pruning layer (K)")
    p.add_argument("--topk", type=positive_int, default=10,
                   help="teacher's top-k tokens distilled into early layers (with --rank-target answer: the k most "
                        "answer-relevant tokens, ranked above all others)")
    p.add_argument("--no-ranking", action="store_true", help="ablation: ranking distillation off")
    p.add_argument("--rank-target", choices=["attention", "answer"], default="attention",
                   help="what the early score layers learn to rank like: the teacher's final attention (the "
                        "authors', default) or, for QA, [ours] its answer relevance from the start/end logits "
                        "(the top-k tokens above all the others)")
    p.add_argument("--rank-layers", type=index_list,
                   help="comma-separated layers whose scores are distilled (default: the first ~L/4 score layers; "
                        "with --rank-target answer every layer whose scores decide a drop)")
    p.add_argument("--rank-alpha", type=positive_float, default=0.01,
                   help="weight of the ranking loss (default %(default)s, the authors'; under ToP it decays over the "
                        "warm-up). With --rank-target answer it also trains under a fixed plan (--method static, "
                        "--hard-epochs) at this constant weight")
    p.add_argument("--scorer", choices=["attention", "question"], default="attention",
                   help="token importance: attention received from every row (default) or, [ours] for QA and other "
                        "pairs, from the first segment's rows only (needs token_type_ids: BERT, ELECTRA, MiniLM)")
    p.add_argument("--score-radius", type=int, default=0, metavar="R",
                   help="[ours] before ranking, raise each token's score to the best within R positions of it, so "
                        "the words next to a strongly attended one survive with it; for QA with --scorer question "
                        "(SQuAD zero-shot at 2x: F1 35 -> 41 with R = 2-5, benchmarks/README.md section 6). Default 0")
    p.add_argument("--no-layer-gates", action="store_true",
                   help="fine (rank-bin) masks only, no layer gates; on MiniLM the better ToP variant on STS-B and "
                        "CoLA (benchmarks/README.md)")
    p.add_argument("--monotone", action="store_true", help="keep the top fraction instead of free bins")
    p.add_argument("--no-fit-plan", action="store_true",
                   help="evaluate and export the authors' rounded masks as they are; by default [ours] they are fitted "
                        "to the budget on the real token counts (bins dropped or given back by logit), without which "
                        "short inputs (CoLA) miss the target")
    p.add_argument("--method", choices=["top", "static", "random"], default="top",
                   help="top: learned ToP masks (default); baselines at the same FLOPs, fine-tuned the same way: "
                        "static (each layer keeps a fixed share of the most-attended tokens) or random")
    emb = p.add_argument_group("--task embedding: a sentence-embedding model (the teacher: itself, dense) on "
                               "unlabelled text from --train-file (.txt, CSV/JSON Lines column, glue:TASK or "
                               "squad:FILE.json)")
    emb.add_argument("--pooling-tokens", choices=["restored", "survivors"], default="restored",
                     help="pool every token (pruned ones with their state when dropped) or only the tokens that "
                          "reached the last layer (default %(default)s)")
    emb.add_argument("--embedding-loss", choices=["cosine", "mse", "cosine+mse", "cosine+tokens"], default="cosine",
                     help="distance of the pooled embedding to the teacher's (default %(default)s)")
    p.add_argument("--eval-every", type=positive_int, default=50,
                   help="steps between evaluations (and checkpoints)")
    p.add_argument("--max-train-samples", type=positive_int,
                   help="train on a seeded random subset of this many examples (default: all)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")


class _Parser(argparse.ArgumentParser):
    """A bad option is one line too (exit 2), not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
def _layers(num_layers: int) -> str:
    from .plan import default_pruning_layers

    layers = default_pruning_layers(num_layers)
    return f"{layers[0]}-{layers[-1]}"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="toprune", description=__doc__.splitlines()[0],
                                     epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()),
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {EXAMPLES[name]}",
                              formatter_class=HelpFormatter)

    p = command("finetune", "fine-tune the dense teacher on a task")
    _common(p, "finetune")
    p.add_argument("--model", default="minilm", help="'minilm' (packaged), a local HF folder or a hub id")
    p.add_argument("--epochs", type=positive_float,
                   help="schedule length (default: the task's searched recipe, toprune.recipes; else 3; the time is "
                        "estimated after the first 10 steps)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default: the task's recipe; else 5e-5)")
    p.add_argument("--max-train-samples", type=positive_int,
                   help="train on a seeded random subset of this many examples (default: all)")
    _select_option(p)
    p.add_argument("--output", required=True, help="model folder to write (HF weights, tokenizer, "
                                                   "toprune_task.json, toprune_teacher.json)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last epoch's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --output (else it refuses)")

    p = command("prune", "ToP pruning of a fine-tuned teacher to a FLOPs target")
    _common(p, "prune")
    p.add_argument("--teacher", required=True, help="fine-tuned dense model folder (from `toprune finetune`)")
    p.add_argument("--output", required=True, help="run folder; the kept model is written to OUTPUT/best")
    _prune_options(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --output (without it, a fresh run there refuses)")

    p = command("eval", "dev metric, FLOPs reduction (both conventions) and tokens kept per layer")
    p.add_argument("model", help="model folder (pruned or dense)")
    _common(p, "eval")
    p.add_argument("--padded-length", type=positive_int,
                   help="length of the padded-FLOPs convention (default: --max-length)")
    p.add_argument("--json", action="store_true", help="print one JSON object (the setup goes to stderr)")

    p = command("bench", "latency of dense vs pruned on real dev inputs (plus dense ONNX Runtime)")
    _common(p, "bench")
    p.add_argument("--dense", required=True, help="the dense model folder (the teacher)")
    p.add_argument("--pruned", required=True, help="the pruned model folder (a run's best/)")
    p.add_argument("--padded-length", type=positive_int,
                   help="length of the padded-FLOPs convention (default: --max-length)")
    p.add_argument("--backend", choices=["pytorch", "onnxruntime"], default="pytorch",
                   help="pytorch: dense HF eager (SDPA) vs our PyTorch runtime, plus the dense ONNX Runtime row; "
                        "onnxruntime: both models exported to ONNX and timed in ONNX Runtime")
    p.add_argument("--int8", action="store_true", help="with --backend onnxruntime: also time dynamic-INT8 graphs")
    _bench_options(p)

    p = command("export", "write an ONNX serving folder (graph + tokenizer + config) of a pruned or dense model")
    p.add_argument("model", help="model folder (pruned or dense)")
    p.add_argument("--output", required=True, help="folder to write model.onnx, the tokenizer and toprune_onnx.json")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic INT8 quantisation)")

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

    p = command("profile", "measure this machine: a latency cost model of the encoder for --constraint latency")
    p.add_argument("model", help="model folder (dense or pruned: its encoder shape is what counts) or 'minilm'")
    p.add_argument("--batch-size", type=positive_int, default=1, help="serving batch size (default %(default)s)")
    p.add_argument("--threads", type=positive_int, help="intra-op threads (default: torch's default here)")
    p.add_argument("--backend", choices=["pytorch"], default="pytorch")
    p.add_argument("--max-tokens", type=positive_int, default=128, help="longest input profiled (default 128)")
    p.add_argument("--check-plans", type=int, default=12,
                   help="random plans whose measured latency is compared with the prediction (default 12; 0: none)")
    p.add_argument("--output", help="also save the profile here (it is always cached for `prune`)")
    p.add_argument("--json", action="store_true")

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
    if hasattr(args, "max_length") and args.max_length is None:
        args.max_length = 384 if squad else 128
    if hasattr(args, "padded_length") and args.padded_length is None:
        args.padded_length = args.max_length
    if getattr(args, "padded_length", None) and args.padded_length < args.max_length:
        raise ToPruneError(f"--padded-length {args.padded_length} is shorter than --max-length {args.max_length}: "
                           f"inputs would be longer than the padded reference")
    if getattr(args, "command", "") == "prune" and args.resume and args.overwrite:
        raise ToPruneError("--resume continues the run in --output, --overwrite replaces it: pass one of them")
    handler = getattr(commands, f"cmd_{args.command}")
    result = handler(args, _data_dir(args))
    if getattr(args, "json", False) and result is not None:
        print(json.dumps(result, indent=1))
    return 0


_USER_OS_ERRORS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT, errno.ENOENT,
                   errno.ENOTDIR, errno.EISDIR}


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
    print(f"toprune: internal error (a bug in toprune, please report it with the command and the output of "
          f"TOPRUNE_DEBUG=1): {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
