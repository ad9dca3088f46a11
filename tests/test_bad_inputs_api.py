"""Bad inputs through the Python API and the serving class: a table of cases (each a one-line ToPruneError naming
the file/option), full disks, locks, resumed logs, divergence, the user-file reader under hypothesis, and the exit
codes of signals and bugs. The command-line table is in test_bad_inputs.py."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import transformers

import toprune
from toprune.cli import main
from toprune.errors import ToPruneError

from .bad_world import GOOD_ROWS, World, build_world, csv_rows, without_progress_bars
from .test_bad_inputs import CASES, prune, squad_file


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("bad-inputs-api"))


pytestmark = pytest.mark.usefixtures("private_datasets_cache")


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
    model.config = {
        "inputs": ["input_ids"],
        "outputs": ["logits"],
        "num_labels": 2,
        "max_length": 128,
        "model_type": "bert",
        "id2label": {},
        **config,
    }
    model.tokenizer = w.tokenizer
    model.max_length = model.config["max_length"]  # the serving length, as __init__ reads it
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

    ToPRun(
        PruneConfig(
            teacher=str(w.good),
            task=None,
            data_dir=None,
            output_dir=str(w.run_folder("r4")),
            train_file=str(w.train),
            validation_file=str(w.dev),
        )
    )


def _seed_api(w):
    from toprune.train import seed_everything

    seed_everything(-1)


def _finetune_epochs_inf(w):
    from toprune.finetune import finetune_teacher

    finetune_teacher(
        str(w.good),
        None,
        None,
        w.root / "api-ft",
        epochs=float("inf"),
        train_file=str(w.train),
        validation_file=str(w.dev),
    )


API_CASES = {
    "nan-label": (lambda w: _user_data(w, csv_rows(GOOD_ROWS + [("x", "NaN")])), ["api-train.csv", "row 9"]),
    "single-class": (lambda w: _user_data(w, csv_rows([("a", "yes"), ("b", "yes")])), ["api-train.csv", "two"]),
    "duplicate-header": (lambda w: _user_data(w, "text,text,label\na,b,1\nc,d,0\n"), ["api-train.csv", "'text'"]),
    "task-type-unknown": (lambda w: _user_data(w, csv_rows(GOOD_ROWS), task_type="ordinal"), ["task-type"]),
    "regression-text-labels": (
        lambda w: _user_data(w, csv_rows([("a", "x"), ("b", "y")]), task_type="regression"),
        ["api-train.csv", "row 1"],
    ),
    "squad-missing-id": (
        lambda w: __import__("toprune.squad").squad.read_squad_json(squad_file(w, "noid.json", "id")),
        ["noid.json", "id"],
    ),
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
    "answer-a-string": (
        lambda w: _onnx(w, outputs=["start_logits", "end_logits"]).answer("who", ["ctx"]),
        ["questions"],
    ),
    "answer-count": (
        lambda w: _onnx(w, outputs=["start_logits", "end_logits"]).answer(["q", "r"], ["c"]),
        ["contexts"],
    ),
    "answer-stride": (
        lambda w: _onnx(w, outputs=["start_logits", "end_logits"]).answer(["q"], ["c"], max_length=32, stride=32),
        ["stride"],
    ),
    "serve-threads-zero": (lambda w: __import__("toprune.serve").serve.OnnxModel(w.root, threads=0), ["threads"]),
    "export-config-damaged": (lambda w: _onnx_open(w, _export_folder(w, "ex-bad", "{")), ["toprune_onnx.json"]),
    "export-without-tokenizer": (
        lambda w: _onnx_open(
            w, _export_folder(w, "ex-notok", json.dumps({"inputs": [], "outputs": []}), tokenizer=False)
        ),
        ["ex-notok", "tokenizer"],
    ),
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
    _, dev, info = _user_data(
        world, csv_rows([("a", "1"), ("b", "1.0"), ("c", "0"), ("d", "0.0")]), csv_rows([("e", "1.00"), ("f", "0")])
    )
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
    cfg = {
        "teacher": str(world.good),
        "task": None,
        "data_dir": None,
        "output_dir": str(out),
        "target": "1.1x",
        "method": "static",
        "epochs": 2,
        "batch_size": 4,
        "eval_every": 1,
        "save_every": 1,
        "max_steps": 1,
        "train_file": str(world.train),
        "validation_file": str(world.dev),
    }
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
    LABEL = st.one_of(
        st.sampled_from(["0", "1", "1.0", "0.0", "pos", "neg", "nan", "inf", "", " 1 ", "007", "7", "2.5", "-1"]),
        st.integers(-3, 3).map(str),
    )
    TEXT = st.text(alphabet="abc ,\"'\t", min_size=0, max_size=6)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        rows=st.lists(st.tuples(TEXT, LABEL), min_size=0, max_size=8),
        header=st.sampled_from(["sentence,label", "sentence,label,label", "text,score", "label,sentence", ""]),
        task_type=st.sampled_from([None, "classification", "regression"]),
    )
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
    code = (
        "import sys, time\nimport toprune.commands as c\n"
        "def slow(args, data_dir):\n    print('ready', flush=True)\n    time.sleep(60)\n"
        "c.cmd_plot = slow\nfrom toprune.cli import main\nsys.exit(main(['plot', 'x']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(toprune.__file__).parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
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
