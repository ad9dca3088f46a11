"""Bad inputs and bad state, as a new user meets them: a table of cases across data files, model folders, run folders,
options and serving. Each asserts the exit code (2: one line naming the file/option; 0 where a case must be
accepted), that no traceback is printed, and, for run folders, that nothing in an existing run folder changed.

Everything is made here: a tiny WordPiece tokenizer over the words of the data, tiny random BERTs saved with it,
small CSV/TSV/JSON files; no shared data, no downloads."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import pytest
import torch
import transformers

import toprune
from toprune.cli import main
from toprune.errors import ToPruneError

WORDS = ["good", "great", "fine", "fun", "nice", "bad", "awful", "dull", "poor", "sad", "the", "a", "film", "movie",
         "plot", "was", "is", "very", "not", "it", "and", "who", "wrote", "report", "ada", "by"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["a good film", "great fun", "the plot was nice", "very fine movie"]
NEGATIVE = ["a bad film", "awful and dull", "the plot was poor", "very sad movie"]


# --- the world the cases run in (built once) -----------------------------------------------------------------------


def make_tokenizer(folder: Path, vocab: list[str]):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(v + "\n" for v in vocab))
    return transformers.BertTokenizer(vocab=str(folder / "vocab.txt"))


def save_model(folder: Path, tokenizer=None, vocab_size: int | None = None, id2label=None, layers: int = 4):
    config = transformers.BertConfig(vocab_size=vocab_size or len(SPECIAL) + len(WORDS), hidden_size=16,
                                     num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=128, num_labels=2)
    if id2label:
        config.id2label = dict(enumerate(id2label))
        config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    toprune.save_pruned(model, folder, tokenizer)
    return folder


def csv_rows(rows, header="sentence,label") -> str:
    return header + "\n" + "".join(f"{t},{y}\n" for t, y in rows)


GOOD_ROWS = [(t, 1) for t in POSITIVE] + [(t, 0) for t in NEGATIVE]


@dataclass
class World:
    root: Path
    good: Path  # tiny model + its tokenizer, generic labels
    train: Path
    dev: Path
    glue: Path
    squad: Path

    def file(self, name: str, text: str) -> str:
        path = self.root / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def run_folder(self, name: str) -> Path:
        """A finished earlier run: kept model, checkpoint, log, summary (the user's work)."""
        run = self.root / "runs" / name
        if not run.exists():
            save_model(run / "best", self.tokenizer)
            (run / "checkpoint.pt").write_bytes(b"PK-not-really-a-checkpoint" * 10)
            (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "dev_metric": 50.0,
                                                           "dev_flops_reduction_unpadded": 1.5}) + "\n")
            (run / "summary.json").write_text(json.dumps({"task": "custom", "best": None}) + "\n")
        return run


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad-inputs")
    tokenizer = make_tokenizer(root / "vocab", SPECIAL + WORDS)
    w = World(root, save_model(root / "good", tokenizer), root / "train.csv", root / "dev.csv", root / "glue",
              root / "squad")
    w.tokenizer = tokenizer
    w.train.write_text(csv_rows(GOOD_ROWS))
    w.dev.write_text(csv_rows(GOOD_ROWS[::2]))
    mrpc = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    (w.glue / "MRPC").mkdir(parents=True)
    (w.glue / "MRPC" / "dev.tsv").write_text(mrpc + "1\t1\t2\ta good film\tgreat fun\n2\t3\t4\ta bad film\tsad\n")
    (w.glue / "MRPC" / "train.tsv").write_text(mrpc + "1\t1\t2\ta good film\tgreat fun\n")
    (w.glue / "STS-B").mkdir()
    (w.glue / "STS-B" / "dev.tsv").write_text("index\tsentence1\tsentence2\tscore\n0\ta film\ta movie\thigh\n")
    # model folder variants
    w.no_tokenizer = save_model(root / "no-tokenizer")
    w.big_tokenizer = save_model(root / "big-tokenizer", make_tokenizer(root / "v2", SPECIAL + WORDS + [
        f"w{i}" for i in range(100)]))
    swapped = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # same size, padding at another id
    w.other_tokenizer = save_model(root / "other-tokenizer", make_tokenizer(root / "v3", swapped + WORDS))
    w.named = save_model(root / "named", tokenizer, id2label=["neg", "pos"])
    w.swapped = save_model(root / "swapped", tokenizer, id2label=["pos", "neg"])
    w.two_layers = save_model(root / "two-layers", tokenizer, layers=2)
    base = transformers.BertModel(transformers.BertConfig.from_pretrained(w.good))  # no task head
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    w.base = root / "base"
    pruned = transformers.BertForSequenceClassification.from_pretrained(w.good)
    toprune.apply_pruning(pruned, toprune.PruningPlan.from_keep_ratios(4, {1: 0.5, 2: 0.5}))
    w.pruned = toprune.save_pruned(pruned, root / "pruned", tokenizer)
    w.partial = root / "partial"  # a 4-layer config over 2-layer weights: half the encoder would be random
    shutil.copytree(w.two_layers, w.partial)
    config = json.loads((w.partial / "config.json").read_text())
    (w.partial / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))
    w.truncated = save_model(root / "truncated", tokenizer)
    weights = w.truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    w.no_config = root / "no-config"
    shutil.copytree(w.good, w.no_config)
    (w.no_config / "config.json").unlink()
    w.bad_config = root / "bad-config"
    shutil.copytree(w.good, w.bad_config)
    (w.bad_config / "config.json").write_text("{not json")
    return w


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


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
        return ["eval", str(w.good), *user(w, bad if where == "train" else None, bad if where == "dev" else None),
                *extra]
    return Case(argv, names=lambda w: [name] + ([row] if row else []))


def prune(w: World, out, *extra) -> list:
    return ["prune", "--teacher", str(w.good), "--output", str(out), *user(w), "--epochs", "1", "--target", "1.1x",
            "--method", "static", "--eval-every", "1", *extra]


def ft(w: World, out, *extra) -> list:
    return ["finetune", "--model", str(w.good), "--output", str(out), *user(w), "--epochs", "1", *extra]


CASES = {
    # data files (the user's own)
    "nan-label": ev_data("nan.csv", csv_rows(GOOD_ROWS + [("a film", "nan")]), row="row 9"),
    "inf-label": ev_data("inf.csv", csv_rows(GOOD_ROWS + [("a film", "inf")]), row="row 9"),
    "nan-in-regression": ev_data("nanreg.csv", csv_rows([(f"film {i}", i / 7) for i in range(20)] + [("a", "nan")]),
                                 "train", "--task-type", "regression", row="row 21"),
    "single-class": ev_data("one.csv", csv_rows([(t, 1) for t in POSITIVE])),
    "single-class-1-and-1.0": ev_data("one2.csv", csv_rows([("a good film", 1), ("great fun", "1.0")])),
    "constant-regression": ev_data("const.csv", csv_rows([(t, 0.5) for t in POSITIVE]), "train",
                                   "--task-type", "regression"),
    "duplicated-header": ev_data("dup.csv", "sentence,label,sentence\na,1,b\nc,0,d\n"),
    "duplicated-header-tsv": ev_data("dup.tsv", "label\ttext\ttext\n1\ta\tb\n0\tc\td\n"),
    "two-spellings-of-a-number": ev_data("spell.csv", csv_rows([("a", "7"), ("b", "007"), ("c", "1")]),
                                         row="row 2"),
    "regression-label-not-number": ev_data("word.csv", csv_rows([("a", 1.5), ("b", "high"), ("c", 2)]), "train",
                                           "--task-type", "regression", row="row 2"),
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
    "missing-train-file": Case(lambda w: ["eval", str(w.good), *user(w, train=w.root / "nope.csv")],
                               names=lambda w: ["nope.csv"]),
    "validation-file-alone": Case(lambda w: ["eval", str(w.good), "--validation-file", str(w.dev)],
                                  names=lambda w: ["--train-file"]),
    "task-type-on-glue": Case(lambda w: ["eval", str(w.good), "--task", "mrpc", "--data-dir", str(w.glue),
                                         "--task-type", "regression"], names=lambda w: ["--task-type"]),
    # GLUE and SQuAD files
    "glue-bad-label": Case(lambda w: ["eval", str(w.good), "--task", "mrpc", "--data-dir", str(w.glue)],
                           names=lambda w: ["MRPC/dev.tsv", "row 2", "'2'"]),
    "glue-bad-score": Case(lambda w: ["eval", str(w.good), "--task", "stsb", "--data-dir", str(w.glue)],
                           names=lambda w: ["STS-B/dev.tsv", "row 1", "high"]),
    "glue-missing-split": Case(lambda w: ["eval", str(w.good), "--task", "rte", "--data-dir", str(w.glue)],
                               names=lambda w: ["RTE/dev.tsv"]),
    "squad-no-question": Case(lambda w: ["eval", str(w.good), "--task", "squad", "--validation-file",
                                         _squad(w, "noq.json", drop="question")],
                              names=lambda w: ["noq.json", "question 1", "question"]),
    "squad-no-context": Case(lambda w: ["eval", str(w.good), "--task", "squad", "--validation-file",
                                        _squad(w, "noc.json", drop="context")], names=lambda w: ["noc.json", "context"]),
    "squad-answer-without-start": Case(lambda w: ["eval", str(w.good), "--task", "squad", "--validation-file",
                                                  _squad(w, "nos.json", drop="answer_start")],
                                       names=lambda w: ["nos.json", "answer_start"]),
    "squad-not-json": Case(lambda w: ["eval", str(w.good), "--task", "squad", "--validation-file",
                                      w.file("x.json", "{")], names=lambda w: ["x.json"]),
    # model folders
    "good-model-accepted": Case(ev("good"), code=0),
    "no-tokenizer-files": Case(ev("no_tokenizer"), names=lambda w: [str(w.no_tokenizer), "tokenizer"]),
    "tokenizer-bigger-than-embeddings": Case(ev("big_tokenizer"), names=lambda w: [str(w.big_tokenizer)]),
    "tokenizer-of-another-model": Case(ev("other_tokenizer"), names=lambda w: [str(w.other_tokenizer), "pads"]),
    "truncated-safetensors": Case(ev("truncated"), names=lambda w: [str(w.truncated), "truncated"]),
    "no-config": Case(ev("no_config"), names=lambda w: [str(w.no_config)]),
    "config-not-json": Case(ev("bad_config"), names=lambda w: [str(w.bad_config)]),
    "label-names-differ": Case(ev("named"), names=lambda w: [str(w.named), "neg", "pos"]),
    "label-names-match": Case(lambda w: ["eval", str(w.named), *user(w, _neg_pos(w), _neg_pos(w))],
                              code=0),  # the task's labels (neg, pos) are the model's: accepted
    "label-order-differs": Case(lambda w: ["eval", str(w.swapped), *user(w, _neg_pos(w), _neg_pos(w))],
                                names=lambda w: [str(w.swapped), "pos, neg"]),
    "label-names-differ-bench": Case(lambda w: ["bench", "--dense", str(w.good), "--pruned", str(w.named), *user(w),
                                                "--examples", "2", "--repeats", "1"], names=lambda w: [str(w.named)]),
    "export-without-tokenizer": Case(lambda w: ["export", str(w.no_tokenizer), "--output", str(w.root / "ex1")],
                                     names=lambda w: [str(w.no_tokenizer)]),
    "show-without-tokenizer": Case(lambda w: ["show", str(w.no_tokenizer), "a good film"],
                                   names=lambda w: [str(w.no_tokenizer)]),
    "teacher-label-names-differ": Case(lambda w: ["prune", "--teacher", str(w.named), "--output",
                                                  str(w.root / "p-named"), *user(w)], names=lambda w: [str(w.named)]),
    "base-model-untrained-head": Case(ev("base"), names=lambda w: [str(w.base), "newly initialised"]),
    "encoder-weights-missing": Case(ev("partial"), names=lambda w: [str(w.partial), "encoder.layer.2"]),
    "finetune-encoder-weights-missing": Case(lambda w: ft(w, w.root / "ft-partial", "--model", str(w.partial)),
                                             names=lambda w: [str(w.partial), "encoder weights"]),
    "eval-a-run-folder": Case(lambda w: ["eval", str(w.run_folder("r5")), *user(w)],
                              names=lambda w: ["r5", "best"]),
    "teacher-untrained-head": Case(lambda w: ["prune", "--teacher", str(w.base), "--output", str(w.root / "p-base"),
                                              *user(w)], names=lambda w: [str(w.base), "fine-tune"]),
    "export-untrained-head": Case(lambda w: ["export", str(w.base), "--output", str(w.root / "ex-base")],
                                  names=lambda w: [str(w.base)]),
    "max-length-beyond-positions": Case(lambda w: ["eval", str(w.good), *user(w), "--max-length", "200"],
                                        names=lambda w: ["--max-length 200", "128"]),
    "bench-different-architectures": Case(lambda w: ["bench", "--dense", str(w.good), "--pruned", str(w.two_layers),
                                                     *user(w)], names=lambda w: ["--dense", str(w.two_layers)]),
    "bench-dense-is-pruned": Case(lambda w: ["bench", "--dense", str(w.pruned), "--pruned", str(w.pruned), *user(w)],
                                  names=lambda w: ["--dense", str(w.pruned)]),
    "finetune-a-pruned-model": Case(lambda w: ft(w, w.root / "ft-pruned", "--model", str(w.pruned)),
                                    names=lambda w: [str(w.pruned), "pruned"]),
    "pruned-model-accepted": Case(lambda w: ["eval", str(w.pruned), *user(w)], code=0),
    # run folders and outputs
    "prune-into-earlier-run": Case(lambda w: prune(w, w.run_folder("r1")), names=lambda w: ["r1", "--resume"],
                                   folder=lambda w: w.run_folder("r1")),
    "prune-resume-truncated-checkpoint": Case(lambda w: prune(w, w.run_folder("r2"), "--resume"),
                                              names=lambda w: ["checkpoint.pt", "truncated"],
                                              folder=lambda w: w.run_folder("r2")),
    "prune-locked-by-live-run": Case(lambda w: prune(w, _locked(w)), names=lambda w: ["locked", "pid 1"],
                                     folder=lambda w: _locked(w)),
    "prune-output-is-a-file": Case(lambda w: prune(w, w.file("afile", "x")), names=lambda w: ["--output", "afile"]),
    "finetune-output-is-a-file": Case(lambda w: ft(w, w.file("bfile", "x")), names=lambda w: ["--output", "bfile"]),
    "finetune-output-under-a-file": Case(lambda w: ft(w, Path(w.file("cfile", "x")) / "sub"),
                                         names=lambda w: ["--output", "cfile"]),
    "finetune-into-non-empty-folder": Case(lambda w: ft(w, w.run_folder("r3") / "best"),
                                           names=lambda w: ["--overwrite"], folder=lambda w: w.run_folder("r3")),
    "finetune-diverges": Case(lambda w: ft(w, w.root / "ft-nan", "--lr", "1e30", "--epochs", "3"),
                              names=lambda w: ["diverged", "step", "loss"]),
    "export-output-is-a-file": Case(lambda w: ["export", str(w.good), "--output", w.file("dfile", "x")],
                                    names=lambda w: ["--output", "dfile"]),
    "plot-tolerates-partial-last-line": Case(lambda w: ["plot", str(_metrics(w, "partial", '{"step": 2, "dev_')),
                                                        "--output", str(w.root / "p.png")], code=0),
    "plot-corrupt-middle-line": Case(lambda w: ["plot", str(_metrics(w, "middle", "garbage\n" + json.dumps(
        {"step": 3, "dev_metric": 1, "dev_flops_reduction_unpadded": 1}))), "--output", str(w.root / "q.png")],
        names=lambda w: ["metrics.jsonl", "line 2"], folder=lambda w: w.root / "runs" / "middle"),
    "demo-corrupt-settings": Case(lambda w: ["demo", "--workdir", str(_demo(w)), *user(w)],
                                  names=lambda w: ["demo_settings.json"], folder=lambda w: w.root / "demo"),
    "plot-no-evaluation-yet": Case(lambda w: ["plot", str(_empty_log(w)), "--output", str(w.root / "n.png")],
                                   names=lambda w: ["metrics.jsonl"]),
    # options
    "text-column-twice": Case(lambda w: ["eval", str(w.good), *user(w), "--text-columns", "sentence,sentence"],
                              names=lambda w: ["--text-columns"]),
    "label-column-as-text": Case(lambda w: ["eval", str(w.good), *user(w), "--text-columns", "label"],
                                 names=lambda w: ["--text-columns", "--label-column"]),
    "padded-length-below-max-length": Case(lambda w: ["eval", str(w.good), *user(w), "--padded-length", "32"],
                                           names=lambda w: ["--padded-length 32"]),
    "resume-and-overwrite": Case(lambda w: prune(w, w.run_folder("r6"), "--resume", "--overwrite"),
                                 names=lambda w: ["--resume", "--overwrite"], folder=lambda w: w.run_folder("r6")),
    "epochs-inf": Case(lambda w: ft(w, w.root / "o1", "--epochs", "inf"), names=lambda w: ["--epochs"]),
    "epochs-nan": Case(lambda w: prune(w, w.root / "o2", "--epochs", "nan"), names=lambda w: ["--epochs"]),
    "seed-negative": Case(lambda w: ft(w, w.root / "o3", "--seed", "-1"), names=lambda w: ["--seed"]),
    "seed-too-large": Case(lambda w: ft(w, w.root / "o4", "--seed", str(2**32)), names=lambda w: ["--seed"]),
    "lr-zero": Case(lambda w: ft(w, w.root / "o5", "--lr", "0"), names=lambda w: ["--lr"]),
    "lr-inf": Case(lambda w: prune(w, w.root / "o6", "--lr", "inf"), names=lambda w: ["--lr"]),
    "max-length-zero": Case(lambda w: ["eval", str(w.good), *user(w), "--max-length", "0"],
                            names=lambda w: ["--max-length"]),
    "task-type-unknown": Case(lambda w: ["eval", str(w.good), *user(w), "--task-type", "ranking"],
                              names=lambda w: ["--task-type"]),
    "batch-sizes-zero": Case(lambda w: ["bench", "--dense", str(w.good), "--pruned", str(w.good), *user(w),
                                        "--batch-sizes", "0"], names=lambda w: ["--batch-sizes"]),
    "bad-target": Case(lambda w: prune(w, w.root / "o7", "--target", "fast"), names=lambda w: ["fast"]),
    "unknown-task": Case(lambda w: ["eval", str(w.good), "--task", "mrcp"], names=lambda w: ["mrcp"]),
    "data-dir-missing": Case(lambda w: ["eval", str(w.good), "--data-dir", str(w.root / "nowhere")],
                             names=lambda w: ["--data-dir"]),
}


def _neg_pos(w: World) -> str:
    return w.file("neg-pos.csv", csv_rows([("a good film", "pos"), ("a bad film", "neg")]))


def _latin1(w: World) -> str:
    path = w.root / "files" / "latin1.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("sentence,label\ncaf\xe9,1\nthe,0\n".encode("latin-1"))
    return str(path)


def _squad(w: World, name: str, drop: str) -> str:
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
        message = err.strip().splitlines()[-1]
        assert message.startswith(("toprune: error:", "toprune ")), err
        if message.startswith("toprune: error:"):
            assert err.strip().count("\n") == 0, err  # one line
        for needed in case.names(world):
            assert needed in message, f"{needed!r} not in {message!r}"
    if folder:
        assert folder_hash(folder) == before, f"{folder} changed"


def without_progress_bars(err: str) -> str:
    """stderr less the progress bars (Hugging Face's, the test's own model saving): what a user reads."""
    lines = [line.rsplit("\r", 1)[-1] for line in err.splitlines()]
    return "".join(line + "\n" for line in lines if line.strip() and not re.search(r"\|\s*\d+/\d+ \[", line))


def _main(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse: usage + one line, exit 2
        return exc.code


# --- the Python API table ------------------------------------------------------------------------------------------


def _user_data(w, train_text, dev_text=None, **kw):
    from toprune.userdata import load_user_data

    return load_user_data(w.file("api-train.csv", train_text), w.file("api-dev.csv", dev_text or train_text), **kw)


def _save_to_file(w):
    model = transformers.BertForSequenceClassification.from_pretrained(str(w.good))
    toprune.save_pruned(model, w.file("a-file", "mine"))


def _save_disk_full(w, monkeypatch):
    model = transformers.BertForSequenceClassification.from_pretrained(str(w.good))

    def full(folder, **kw):
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save_pretrained", full)
    target = w.root / "full-disk"
    try:
        toprune.save_pruned(model, target)
    finally:
        assert not target.exists() and not list(w.root.glob(".full-disk.tmp-*"))  # nothing half-written remains


def _write_disk_full(w, monkeypatch):
    from toprune import safeio

    path = Path(w.file("summary-full.json", '{"mine": 1}'))

    class Full:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safeio, "open", Full, raising=False)
    try:
        safeio.atomic_write_text(path, "{}")
    finally:
        assert path.read_text() == '{"mine": 1}' and not path.with_name(".summary-full.json.tmp").exists()


def _onnx(w, **config):
    from toprune.serve import OnnxModel

    model = OnnxModel.__new__(OnnxModel)  # the refusals come before any session runs
    model.config = {"inputs": ["input_ids"], "outputs": ["logits"], "num_labels": 2, "max_length": 128,
                    "model_type": "bert", "id2label": {}, **config}
    model.tokenizer = w.tokenizer
    return model


def _export_folder(w, name, config_text, tokenizer=True):
    folder = w.root / name
    folder.mkdir(exist_ok=True)
    (folder / "toprune_onnx.json").write_text(config_text)
    (folder / "model.onnx").write_bytes(b"graph")
    if tokenizer:
        w.tokenizer.save_pretrained(folder)
    return folder


def _onnx_open(w, folder):
    from toprune.serve import OnnxModel

    OnnxModel(folder)


def _lock_twice(w):
    from toprune.safeio import run_lock

    folder = w.root / "lock-live"
    folder.mkdir(exist_ok=True)
    (folder / ".lock").write_text(f"{os.getppid()}\n")
    with run_lock(folder):
        pass


def _prune_api_overwrite_refused(w):
    from toprune.prune import PruneConfig, ToPRun

    ToPRun(PruneConfig(teacher=str(w.good), task=None, data_dir=None, output_dir=str(w.run_folder("r4")),
                       train_file=str(w.train), validation_file=str(w.dev)))


def _seed_api(w):
    from toprune.train import seed_everything

    seed_everything(-1)


def _finetune_epochs_inf(w):
    from toprune.train import finetune_teacher

    finetune_teacher(str(w.good), None, None, w.root / "api-ft", epochs=float("inf"), train_file=str(w.train),
                     validation_file=str(w.dev))


API_CASES = {
    "nan-label": (lambda w: _user_data(w, csv_rows(GOOD_ROWS + [("x", "NaN")])), ["api-train.csv", "row 9"]),
    "single-class": (lambda w: _user_data(w, csv_rows([("a", "yes"), ("b", "yes")])), ["api-train.csv", "two"]),
    "duplicate-header": (lambda w: _user_data(w, "text,text,label\na,b,1\nc,d,0\n"), ["api-train.csv", "'text'"]),
    "task-type-unknown": (lambda w: _user_data(w, csv_rows(GOOD_ROWS), task_type="ordinal"), ["task-type"]),
    "regression-text-labels": (lambda w: _user_data(w, csv_rows([("a", "x"), ("b", "y")]), task_type="regression"),
                               ["api-train.csv", "row 1"]),
    "squad-missing-id": (lambda w: __import__("toprune.squad").squad.read_squad_json(_squad(w, "noid.json", "id")),
                         ["noid.json", "id"]),
    "save-into-a-file": (_save_to_file, ["a-file"]),
    "seed-negative": (_seed_api, ["seed"]),
    "finetune-epochs-inf": (_finetune_epochs_inf, ["epochs"]),
    "prune-into-earlier-run": (_prune_api_overwrite_refused, ["r4", "overwrite"]),
    "lock-held-by-live-process": (_lock_twice, ["lock-live", "pid"]),
    "predict-a-string": (lambda w: _onnx(w).predict("a good film"), ["texts", "[text]"]),
    "predict-pairs-a-string": (lambda w: _onnx(w).predict(["a"], pairs="b"), ["pairs"]),
    "predict-pair-count": (lambda w: _onnx(w).predict(["a"] * 32, pairs=["b"] * 33), ["32 texts", "33 pairs"]),
    "predict-batch-zero": (lambda w: _onnx(w).predict(["a"], batch_size=0), ["batch_size"]),
    "predict-beyond-positions": (lambda w: _onnx(w).predict(["a"], max_length=129), ["max_length", "128"]),
    "predict-not-strings": (lambda w: _onnx(w).predict(["a", None]), ["texts[1]"]),
    "answer-a-string": (lambda w: _onnx(w, outputs=["start_logits", "end_logits"]).answer("who", ["ctx"]),
                        ["questions"]),
    "answer-count": (lambda w: _onnx(w, outputs=["start_logits", "end_logits"]).answer(["q", "r"], ["c"]),
                     ["contexts"]),
    "answer-stride": (lambda w: _onnx(w, outputs=["start_logits", "end_logits"]).answer(["q"], ["c"], max_length=32,
                                                                                         stride=32), ["stride"]),
    "serve-threads-zero": (lambda w: __import__("toprune.serve").serve.OnnxModel(w.root, threads=0), ["threads"]),
    "export-config-damaged": (lambda w: _onnx_open(w, _export_folder(w, "ex-bad", "{")), ["toprune_onnx.json"]),
    "export-without-tokenizer": (lambda w: _onnx_open(w, _export_folder(w, "ex-notok", json.dumps(
        {"inputs": [], "outputs": []}), tokenizer=False)), ["ex-notok", "tokenizer"]),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_api_bad_input(name, world):
    make, names = API_CASES[name]
    with pytest.raises(ToPruneError) as info:
        make(world)
    message = str(info.value)
    assert "\n" not in message
    for needed in names:
        assert needed in message, f"{needed!r} not in {message!r}"


@pytest.mark.parametrize("make", [_save_disk_full, _write_disk_full], ids=["save-pruned", "atomic-write"])
def test_disk_full_is_one_line_and_leaves_no_temporary(world, monkeypatch, make):
    with pytest.raises(ToPruneError, match="No space left on device") as info:
        make(world, monkeypatch)
    assert "\n" not in str(info.value)


# --- accepted where the old code went wrong ------------------------------------------------------------------------


def test_one_and_one_point_zero_are_one_class(world):
    _, dev, info = _user_data(world, csv_rows([("a", "1"), ("b", "1.0"), ("c", "0"), ("d", "0.0")]),
                              csv_rows([("e", "1.00"), ("f", "0")]))
    assert info.labels == ("0", "1") and dev["label"] == ["1", "0"]


def test_task_type_overrides_inference(world):
    rows = csv_rows([("a", 1), ("b", 2), ("c", 3)])  # three numbers: a classifier by default
    assert _user_data(world, rows)[2].labels == ("1", "2", "3")
    assert _user_data(world, rows, task_type="regression")[2].is_regression


def test_a_dead_runs_lock_is_taken_over(world):
    from toprune.safeio import run_lock

    folder = world.root / "lock-stale"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / ".lock").write_text(f"{dead.pid}\n")
    with run_lock(folder):
        assert (folder / ".lock").read_text().strip() == str(os.getpid())
    assert not (folder / ".lock").exists()


def test_resume_trims_a_partial_metrics_line(world):
    from toprune.prune import PruneConfig, ToPRun

    out = world.root / "runs" / "partial-resume"
    cfg = {"teacher": str(world.good), "task": None, "data_dir": None, "output_dir": str(out), "target": "1.1x",
           "method": "static", "epochs": 2, "batch_size": 4, "eval_every": 1, "save_every": 1, "max_steps": 1,
           "train_file": str(world.train), "validation_file": str(world.dev)}
    ToPRun(PruneConfig(**cfg), log=lambda *_: None).run()
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')  # a kill mid-write
    summary = ToPRun(PruneConfig(**{**cfg, "max_steps": 2, "resume": True}), log=lambda *_: None).run()
    assert summary["steps"] == 2
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_prune_divergence_stops_the_run_and_keeps_nothing_diverged(world, capsys):
    out = world.root / "runs" / "diverged"
    code = main(prune(world, out, "--lr", "1e30", "--epochs", "3"))
    err = without_progress_bars(capsys.readouterr().err)
    assert code == 2 and "diverged" in err and err.count("\n") == 1, err
    best = out / "best"
    if best.exists():  # kept before the divergence: its weights are finite
        state = transformers.BertForSequenceClassification.from_pretrained(str(best)).state_dict()
        assert all(torch.isfinite(v).all() for v in state.values())
    assert not (out / "summary.json").exists()


# --- the file reader, property-based -------------------------------------------------------------------------------

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the test extras
    given = None

if given is not None:
    LABEL = st.one_of(st.sampled_from(["0", "1", "1.0", "0.0", "pos", "neg", "nan", "inf", "", " 1 ", "007", "7",
                                       "2.5", "-1"]), st.integers(-3, 3).map(str))
    TEXT = st.text(alphabet="abc ,\"'\t", min_size=0, max_size=6)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(rows=st.lists(st.tuples(TEXT, LABEL), min_size=0, max_size=8), header=st.sampled_from(
        ["sentence,label", "sentence,label,label", "text,score", "label,sentence", ""]),
        task_type=st.sampled_from([None, "classification", "regression"]))
    def test_user_file_reader_accepts_or_names_the_file(world, rows, header, task_type):
        """Whatever the file holds: either a consistent task, or one line that names the file; never anything
        else (no crash, no NaN class, no single-class classifier)."""
        import csv
        import io
        import math
        import tempfile

        from toprune.userdata import load_user_data

        with tempfile.TemporaryDirectory() as tmp:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            if header:
                buffer.write(header + "\n")
            for text, label in rows:
                writer.writerow([text, label] if not header.startswith("label") else [label, text])
            path = Path(tmp) / "data.csv"
            path.write_text(buffer.getvalue())
            datasets.config.HF_DATASETS_CACHE = Path(tmp) / "cache"
            try:
                train, dev, info = load_user_data(path, path, task_type=task_type)
            except ToPruneError as exc:
                assert "\n" not in str(exc) and "data.csv" in str(exc), str(exc)
                return
            assert len(train) == len(rows)
            if info.is_regression:
                values = train["label"]
                assert all(math.isfinite(v) for v in values) and len(set(values)) >= 2
            else:
                assert len(info.labels) >= 2 and "nan" not in info.labels and "inf" not in info.labels
                assert not ({"1", "1.0"} <= set(info.labels))
                assert set(dev["label"]) <= set(info.labels)


# --- signals -------------------------------------------------------------------------------------------------------


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    code = ("import sys, time\nimport toprune.commands as c\n"
            "def slow(args, data_dir):\n    print('ready', flush=True)\n    time.sleep(60)\n"
            "c.cmd_plot = slow\nfrom toprune.cli import main\nsys.exit(main(['plot', 'x']))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(toprune.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err


def test_a_bug_exits_1_with_a_hint_to_report_it(monkeypatch, capsys):
    from toprune import commands

    def broken(args, data_dir):
        raise ZeroDivisionError("division by zero")

    monkeypatch.delenv("TOPRUNE_DEBUG", raising=False)
    monkeypatch.setattr(commands, "cmd_plot", broken)
    assert main(["plot", "x"]) == 1
    err = without_progress_bars(capsys.readouterr().err)
    assert err.count("\n") == 1 and "report" in err and "TOPRUNE_DEBUG=1" in err and "ZeroDivisionError" in err


def test_the_table_is_large_enough():
    assert len(CASES) + len(API_CASES) >= 60


def test_regression_targets_may_be_written_any_way(world):
    rows = csv_rows([(f"film {i}", f"{i / 4:.2f}") for i in range(12)] + [("a", "0.5"), ("b", "0.50")])
    train, _, info = _user_data(world, rows)
    assert info.is_regression and train["label"][-2:] == [0.5, 0.5]
