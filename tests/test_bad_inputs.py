"""Bad inputs and bad state on the command line, as a new user meets them: a table of cases across data files,
model folders, run folders and options. Each asserts the exit code (2: one line naming the file/option; 0 where a
case must be accepted), that no traceback is printed, and, for run folders, that nothing in an existing run folder
changed. The Python API and serving cases are in test_bad_inputs_api.py; the world they run in is bad_world.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from toprune.cli import main

from .bad_world import (
    GOOD_ROWS,
    POSITIVE,
    World,
    build_world,
    csv_rows,
    folder_hash,
    without_progress_bars,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("bad-inputs"))


pytestmark = pytest.mark.usefixtures("private_datasets_cache")


# --- the CLI table -------------------------------------------------------------------------------------------------


@dataclass
class Case:
    argv: Callable[[World], list]  # the command line, made from the world
    code: int = 2
    names: Callable[[World], list] = lambda w: []  # what the message must name (file, option, row)
    folder: Callable[[World], Path] | None = None  # a run folder that must not change


def user(w: World, train=None, dev=None, *extra) -> list:
    return ["--train-file", str(train or w.train), "--validation-file", str(dev or w.dev), *extra]


def ev(model_attr: str = "good"):
    return lambda w: ["eval", str(getattr(w, model_attr)), *user(w)]


def ev_data(name: str, text: str, where: str = "train", *extra, row: str | None = None):
    """eval on a user file with one defect; the message must name the file (and the row when given)."""

    def argv(w):
        bad = w.file(name, text)
        return [
            "eval",
            str(w.good),
            *user(w, bad if where == "train" else None, bad if where == "dev" else None),
            *extra,
        ]

    return Case(argv, names=lambda w: [name] + ([row] if row else []))


def prune(w: World, out, *extra) -> list:
    return [
        "prune",
        "--teacher",
        str(w.good),
        "--output",
        str(out),
        *user(w),
        "--epochs",
        "1",
        "--target",
        "1.1x",
        "--method",
        "static",
        "--eval-every",
        "1",
        *extra,
    ]


def ft(w: World, out, *extra) -> list:
    return ["finetune", "--model", str(w.good), "--output", str(out), *user(w), "--epochs", "1", *extra]


CASES = {
    # data files (the user's own)
    "nan-label": ev_data("nan.csv", csv_rows(GOOD_ROWS + [("a film", "nan")]), row="row 9"),
    "inf-label": ev_data("inf.csv", csv_rows(GOOD_ROWS + [("a film", "inf")]), row="row 9"),
    "nan-in-regression": ev_data(
        "nanreg.csv",
        csv_rows([(f"film {i}", i / 7) for i in range(20)] + [("a", "nan")]),
        "train",
        "--task-type",
        "regression",
        row="row 21",
    ),
    "single-class": ev_data("one.csv", csv_rows([(t, 1) for t in POSITIVE])),
    "single-class-1-and-1.0": ev_data("one2.csv", csv_rows([("a good film", 1), ("great fun", "1.0")])),
    "constant-regression": ev_data(
        "const.csv", csv_rows([(t, 0.5) for t in POSITIVE]), "train", "--task-type", "regression"
    ),
    "duplicated-header": ev_data("dup.csv", "sentence,label,sentence\na,1,b\nc,0,d\n"),
    "duplicated-header-tsv": ev_data("dup.tsv", "label\ttext\ttext\n1\ta\tb\n0\tc\td\n"),
    "two-spellings-of-a-number": ev_data("spell.csv", csv_rows([("a", "7"), ("b", "007"), ("c", "1")]), row="row 2"),
    "regression-label-not-number": ev_data(
        "word.csv", csv_rows([("a", 1.5), ("b", "high"), ("c", 2)]), "train", "--task-type", "regression", row="row 2"
    ),
    "unseen-dev-label": ev_data("unseen.csv", csv_rows([("a good film", 3)]), "dev", row="row 1"),
    "empty-label": ev_data("emptylab.csv", csv_rows(GOOD_ROWS + [("a film", "")]), row="row 9"),
    "empty-text": ev_data("emptytext.csv", csv_rows(GOOD_ROWS + [("", 1)]), row="row 9"),
    "row-too-long": ev_data("long.csv", csv_rows(GOOD_ROWS) + "a,1,extra\n"),
    "empty-file": ev_data("empty.csv", ""),
    "header-only": ev_data("header.csv", "sentence,label\n"),
    "unsupported-extension": ev_data("data.xlsx", "x"),
    "not-utf8": Case(lambda w: ["eval", str(w.good), *user(w, train=_latin1(w))], names=lambda w: ["latin1.csv"]),
    "malformed-jsonl": ev_data("bad.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": \n'),
    "no-label-column": ev_data("nolabel.csv", "sentence,other\na,1\nb,0\n"),
    "missing-train-file": Case(
        lambda w: ["eval", str(w.good), *user(w, train=w.root / "nope.csv")], names=lambda w: ["nope.csv"]
    ),
    "validation-file-alone": Case(
        lambda w: ["eval", str(w.good), "--validation-file", str(w.dev)], names=lambda w: ["--train-file"]
    ),
    "task-type-on-glue": Case(
        lambda w: ["eval", str(w.good), "--task", "mrpc", "--data-dir", str(w.glue), "--task-type", "regression"],
        names=lambda w: ["--task-type"],
    ),
    # GLUE and SQuAD files
    "glue-bad-label": Case(
        lambda w: ["eval", str(w.good), "--task", "mrpc", "--data-dir", str(w.glue)],
        names=lambda w: ["MRPC/dev.tsv", "row 2", "'2'"],
    ),
    "glue-bad-score": Case(
        lambda w: ["eval", str(w.good), "--task", "stsb", "--data-dir", str(w.glue)],
        names=lambda w: ["STS-B/dev.tsv", "row 1", "high"],
    ),
    "glue-model-of-another-task": Case(
        lambda w: ["eval", str(w.trained_sst2), "--task", "wnli", "--data-dir", str(w.glue)],
        names=lambda w: [str(w.trained_sst2), "sst2", "wnli"],
    ),
    "glue-model-of-this-task": Case(
        lambda w: ["eval", str(w.trained_wnli), "--task", "wnli", "--data-dir", str(w.glue)], code=0
    ),
    "glue-missing-split": Case(
        lambda w: ["eval", str(w.good), "--task", "rte", "--data-dir", str(w.glue)], names=lambda w: ["RTE/dev.tsv"]
    ),
    "squad-no-question": Case(
        lambda w: [
            "eval",
            str(w.good),
            "--task",
            "squad",
            "--validation-file",
            squad_file(w, "noq.json", drop="question"),
        ],
        names=lambda w: ["noq.json", "question 1", "question"],
    ),
    "squad-no-context": Case(
        lambda w: [
            "eval",
            str(w.good),
            "--task",
            "squad",
            "--validation-file",
            squad_file(w, "noc.json", drop="context"),
        ],
        names=lambda w: ["noc.json", "context"],
    ),
    "squad-answer-without-start": Case(
        lambda w: [
            "eval",
            str(w.good),
            "--task",
            "squad",
            "--validation-file",
            squad_file(w, "nos.json", drop="answer_start"),
        ],
        names=lambda w: ["nos.json", "answer_start"],
    ),
    "squad-not-json": Case(
        lambda w: ["eval", str(w.good), "--task", "squad", "--validation-file", w.file("x.json", "{")],
        names=lambda w: ["x.json"],
    ),
    # model folders
    "good-model-accepted": Case(ev("good"), code=0),
    "no-tokenizer-files": Case(ev("no_tokenizer"), names=lambda w: [str(w.no_tokenizer), "tokenizer"]),
    "tokenizer-bigger-than-embeddings": Case(ev("big_tokenizer"), names=lambda w: [str(w.big_tokenizer)]),
    "tokenizer-of-another-model": Case(ev("other_tokenizer"), names=lambda w: [str(w.other_tokenizer), "pads"]),
    "truncated-safetensors": Case(ev("truncated"), names=lambda w: [str(w.truncated), "truncated"]),
    "no-config": Case(ev("no_config"), names=lambda w: [str(w.no_config)]),
    "config-not-json": Case(ev("bad_config"), names=lambda w: [str(w.bad_config)]),
    "label-names-differ": Case(ev("named"), names=lambda w: [str(w.named), "neg", "pos"]),
    "label-names-match": Case(
        lambda w: ["eval", str(w.named), *user(w, _neg_pos(w), _neg_pos(w))], code=0
    ),  # the task's labels (neg, pos) are the model's: accepted
    "label-order-differs": Case(
        lambda w: ["eval", str(w.swapped), *user(w, _neg_pos(w), _neg_pos(w))],
        names=lambda w: [str(w.swapped), "pos, neg"],
    ),
    "label-names-differ-bench": Case(
        lambda w: [
            "bench",
            "--dense",
            str(w.good),
            "--pruned",
            str(w.named),
            *user(w),
            "--examples",
            "2",
            "--repeats",
            "1",
        ],
        names=lambda w: [str(w.named)],
    ),
    "export-without-tokenizer": Case(
        lambda w: ["export", str(w.no_tokenizer), "--output", str(w.root / "ex1")],
        names=lambda w: [str(w.no_tokenizer)],
    ),
    "show-without-tokenizer": Case(
        lambda w: ["show", str(w.no_tokenizer), "a good film"], names=lambda w: [str(w.no_tokenizer)]
    ),
    "teacher-label-names-differ": Case(
        lambda w: ["prune", "--teacher", str(w.named), "--output", str(w.root / "p-named"), *user(w)],
        names=lambda w: [str(w.named)],
    ),
    "base-model-untrained-head": Case(ev("base"), names=lambda w: [str(w.base), "newly initialised"]),
    "encoder-weights-missing": Case(ev("partial"), names=lambda w: [str(w.partial), "encoder.layer.2"]),
    "finetune-encoder-weights-missing": Case(
        lambda w: ft(w, w.root / "ft-partial", "--model", str(w.partial)),
        names=lambda w: [str(w.partial), "encoder weights"],
    ),
    "eval-a-run-folder": Case(lambda w: ["eval", str(w.run_folder("r5")), *user(w)], names=lambda w: ["r5", "best"]),
    "teacher-untrained-head": Case(
        lambda w: ["prune", "--teacher", str(w.base), "--output", str(w.root / "p-base"), *user(w)],
        names=lambda w: [str(w.base), "fine-tune"],
    ),
    "export-untrained-head": Case(
        lambda w: ["export", str(w.base), "--output", str(w.root / "ex-base")], names=lambda w: [str(w.base)]
    ),
    "max-length-beyond-positions": Case(
        lambda w: ["eval", str(w.good), *user(w), "--max-length", "200"], names=lambda w: ["--max-length 200", "128"]
    ),
    "bench-different-architectures": Case(
        lambda w: ["bench", "--dense", str(w.good), "--pruned", str(w.two_layers), *user(w)],
        names=lambda w: ["--dense", str(w.two_layers)],
    ),
    "bench-dense-is-pruned": Case(
        lambda w: ["bench", "--dense", str(w.pruned), "--pruned", str(w.pruned), *user(w)],
        names=lambda w: ["--dense", str(w.pruned)],
    ),
    "finetune-a-pruned-model": Case(
        lambda w: ft(w, w.root / "ft-pruned", "--model", str(w.pruned)), names=lambda w: [str(w.pruned), "pruned"]
    ),
    "pruned-model-accepted": Case(lambda w: ["eval", str(w.pruned), *user(w)], code=0),
    # run folders and outputs
    "prune-into-earlier-run": Case(
        lambda w: prune(w, w.run_folder("r1")), names=lambda w: ["r1", "--resume"], folder=lambda w: w.run_folder("r1")
    ),
    "prune-resume-truncated-checkpoint": Case(
        lambda w: prune(w, w.run_folder("r2"), "--resume"),
        names=lambda w: ["checkpoint.pt", "truncated"],
        folder=lambda w: w.run_folder("r2"),
    ),
    "prune-locked-by-live-run": Case(
        lambda w: prune(w, _locked(w)), names=lambda w: ["locked", "pid 1"], folder=lambda w: _locked(w)
    ),
    "prune-output-is-a-file": Case(lambda w: prune(w, w.file("afile", "x")), names=lambda w: ["--output", "afile"]),
    "finetune-output-is-a-file": Case(lambda w: ft(w, w.file("bfile", "x")), names=lambda w: ["--output", "bfile"]),
    "finetune-output-under-a-file": Case(
        lambda w: ft(w, Path(w.file("cfile", "x")) / "sub"), names=lambda w: ["--output", "cfile"]
    ),
    "finetune-into-non-empty-folder": Case(
        lambda w: ft(w, w.run_folder("r3") / "best"),
        names=lambda w: ["--overwrite"],
        folder=lambda w: w.run_folder("r3"),
    ),
    "finetune-diverges": Case(
        lambda w: ft(w, w.root / "ft-nan", "--lr", "1e30", "--epochs", "3"),
        names=lambda w: ["diverged", "step", "loss"],
    ),
    "export-output-is-a-file": Case(
        lambda w: ["export", str(w.good), "--output", w.file("dfile", "x")], names=lambda w: ["--output", "dfile"]
    ),
    "plot-tolerates-partial-last-line": Case(
        lambda w: ["plot", str(_metrics(w, "partial", '{"step": 2, "dev_')), "--output", str(w.root / "p.png")], code=0
    ),
    "plot-corrupt-middle-line": Case(
        lambda w: [
            "plot",
            str(
                _metrics(
                    w,
                    "middle",
                    "garbage\n" + json.dumps({"step": 3, "dev_metric": 1, "dev_flops_reduction_unpadded": 1}),
                )
            ),
            "--output",
            str(w.root / "q.png"),
        ],
        names=lambda w: ["metrics.jsonl", "line 2"],
        folder=lambda w: w.root / "runs" / "middle",
    ),
    "demo-corrupt-settings": Case(
        lambda w: ["demo", "--workdir", str(_demo(w)), *user(w)],
        names=lambda w: ["demo_settings.json"],
        folder=lambda w: w.root / "demo",
    ),
    "plot-no-evaluation-yet": Case(
        lambda w: ["plot", str(_empty_log(w)), "--output", str(w.root / "n.png")], names=lambda w: ["metrics.jsonl"]
    ),
    # options
    "text-column-twice": Case(
        lambda w: ["eval", str(w.good), *user(w), "--text-columns", "sentence,sentence"],
        names=lambda w: ["--text-columns"],
    ),
    "label-column-as-text": Case(
        lambda w: ["eval", str(w.good), *user(w), "--text-columns", "label"],
        names=lambda w: ["--text-columns", "--label-column"],
    ),
    "padded-length-below-max-length": Case(
        lambda w: ["eval", str(w.good), *user(w), "--padded-length", "32"], names=lambda w: ["--padded-length 32"]
    ),
    "resume-and-overwrite": Case(
        lambda w: prune(w, w.run_folder("r6"), "--resume", "--overwrite"),
        names=lambda w: ["--resume", "--overwrite"],
        folder=lambda w: w.run_folder("r6"),
    ),
    "epochs-inf": Case(lambda w: ft(w, w.root / "o1", "--epochs", "inf"), names=lambda w: ["--epochs"]),
    "epochs-nan": Case(lambda w: prune(w, w.root / "o2", "--epochs", "nan"), names=lambda w: ["--epochs"]),
    "seed-negative": Case(lambda w: ft(w, w.root / "o3", "--seed", "-1"), names=lambda w: ["--seed"]),
    "seed-too-large": Case(lambda w: ft(w, w.root / "o4", "--seed", str(2**32)), names=lambda w: ["--seed"]),
    "lr-zero": Case(lambda w: ft(w, w.root / "o5", "--lr", "0"), names=lambda w: ["--lr"]),
    "lr-inf": Case(lambda w: prune(w, w.root / "o6", "--lr", "inf"), names=lambda w: ["--lr"]),
    "max-length-zero": Case(
        lambda w: ["eval", str(w.good), *user(w), "--max-length", "0"], names=lambda w: ["--max-length"]
    ),
    "task-type-unknown": Case(
        lambda w: ["eval", str(w.good), *user(w), "--task-type", "ranking"], names=lambda w: ["--task-type"]
    ),
    "batch-sizes-zero": Case(
        lambda w: ["bench", "--dense", str(w.good), "--pruned", str(w.good), *user(w), "--batch-sizes", "0"],
        names=lambda w: ["--batch-sizes"],
    ),
    "bad-target": Case(lambda w: prune(w, w.root / "o7", "--target", "fast"), names=lambda w: ["fast"]),
    "unknown-task": Case(lambda w: ["eval", str(w.good), "--task", "mrcp"], names=lambda w: ["mrcp"]),
    "data-dir-missing": Case(
        lambda w: ["eval", str(w.good), "--data-dir", str(w.root / "nowhere")], names=lambda w: ["--data-dir"]
    ),
}


def _neg_pos(w: World) -> str:
    return w.file("neg-pos.csv", csv_rows([("a good film", "pos"), ("a bad film", "neg")]))


def _latin1(w: World) -> str:
    path = w.root / "files" / "latin1.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("sentence,label\ncaf\xe9,1\nthe,0\n".encode("latin-1"))
    return str(path)


def squad_file(w: World, name: str, drop: str) -> str:
    qa = {"id": "q1", "question": "who wrote it", "answers": [{"text": "ada", "answer_start": 16}]}
    paragraph = {"context": "it was wrote by ada", "qas": [qa]}
    if drop in qa:
        del qa[drop]
    elif drop in paragraph:
        del paragraph[drop]
    else:
        del qa["answers"][0][drop]
    return w.file(name, json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [paragraph]}]}))


def _locked(w: World) -> Path:
    folder = w.root / "runs" / "locked"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".lock").write_text("1\n")  # pid 1 is alive for as long as the machine is
    return folder


def _empty_log(w: World) -> Path:
    folder = w.root / "runs" / "no-eval"  # killed before its first evaluation
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("")
    return folder


def _metrics(w: World, name: str, tail: str) -> Path:
    folder = w.root / "runs" / name
    folder.mkdir(parents=True, exist_ok=True)
    record = {"step": 1, "dev_metric": 50.0, "dev_flops_reduction_unpadded": 1.5}
    (folder / "metrics.jsonl").write_text(json.dumps(record) + "\n" + tail)
    return folder


def _demo(w: World) -> Path:
    folder = w.root / "demo"
    (folder / "custom").mkdir(parents=True, exist_ok=True)
    (folder / "custom" / "demo_settings.json").write_text('{"model": ')
    return folder


@pytest.mark.parametrize("name", list(CASES))
def test_cli_bad_input(name, world, capsys):
    case = CASES[name]
    argv = [str(a) for a in case.argv(world)]
    folder = case.folder(world) if case.folder else None
    before = folder_hash(folder) if folder else None
    code = _main(argv)
    err = without_progress_bars(capsys.readouterr().err)
    assert "Traceback" not in err and "internal error" not in err, err
    assert code == case.code, f"exit {code}: {err}"
    if case.code == 2:
        assert err.strip().count("\n") == 0, err  # one line, argparse's errors included
        message = err.strip()
        assert message.startswith(("toprune: error:", "toprune ")), err
        for needed in case.names(world):
            assert needed in message, f"{needed!r} not in {message!r}"
    if folder:
        assert folder_hash(folder) == before, f"{folder} changed"


def _main(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse: usage + one line, exit 2
        return exc.code
