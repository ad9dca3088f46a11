"""The user's own data, first class: the inferred setup is said and recorded, a saved model carries its task (eval
needs only the file to evaluate on), --help shows every default, the run plot has the teacher line and the kept
marker, and the serving folder records the training length."""

from __future__ import annotations

import argparse
import json

import datasets
import pytest

import toprune
from toprune.cli import build_parser, main
from toprune.plots import plot_run_history
from toprune.report import setup_facts, setup_lines
from toprune.train import prepare_data

from .conftest import tiny_bert_with_tokenizer

WORDS = {
    "1": "match goal team season",
    "2": "market shares profit bank",
    "3": "planet cells study lab",
    "4": "election minister summit treaty",
}


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def news_csv(path, counts):
    """A 4-class CSV with two text columns; ``counts[label]`` rows of each label (labels 1..4 as in the issue)."""
    rows = [
        (f"{WORDS[y].split()[i % 4]} news {i}", f"the {WORDS[y].split()[(i + 1) % 4]} today", y)
        for y, n in counts.items()
        for i in range(n)
    ]
    path.write_text("headline,body,label\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    return path


def test_setup_of_a_csv_names_columns_label_ids_counts_and_sizes(tmp_path):
    train = news_csv(tmp_path / "news_train.csv", {"3": 2, "1": 5, "4": 3, "2": 4})
    dev = news_csv(tmp_path / "news_dev.csv", {"1": 1, "2": 2, "3": 1, "4": 2})
    data = prepare_data(
        toprune.load_tokenizer("minilm"), None, None, train_file=str(train), validation_file=str(dev), select_on="dev"
    )
    facts = setup_facts(data, {"epochs": 3.0, "steps": 3, "lr": 5e-5})
    assert facts["data"] == {"train_file": "news_train.csv", "validation_file": "news_dev.csv"}
    assert facts["text_columns"] == ["headline", "body"] and facts["label_column"] == "label"
    assert facts["task_type"] == "classification" and facts["metric_label"] == "news_dev.csv accuracy"
    assert facts["labels"] == [
        {"label": "1", "id": 0, "train": 5, "dev": 1},
        {"label": "2", "id": 1, "train": 4, "dev": 2},
        {"label": "3", "id": 2, "train": 2, "dev": 1},
        {"label": "4", "id": 3, "train": 3, "dev": 2},
    ]
    assert facts["sizes"] == {"train": 14, "selection": None, "dev": 6}
    text = "\n".join(setup_lines(facts))
    assert "news_train.csv (train)" in text and "text columns: headline, body (a sentence pair)" in text
    assert "4 classes; label -> id (sorted): '1'->0 (5 train, 1 dev)" in text
    assert "selection n/a" in text and "epochs 3, steps 3, lr 5e-05" in text
    assert data.name == "news_train.csv"  # progress bars and messages name the file, never "custom" or a GLUE task
    assert "checkpoints: selected on dev" in text


def test_setup_names_the_held_out_selection_slice(tmp_path):
    train = news_csv(tmp_path / "news_train.csv", {y: 10 for y in WORDS})
    dev = news_csv(tmp_path / "news_dev.csv", {y: 1 for y in WORDS})
    data = prepare_data(toprune.load_tokenizer("minilm"), None, None, train_file=str(train), validation_file=str(dev))
    facts = setup_facts(data)
    assert facts["sizes"] == {"train": 36, "selection": 4, "dev": 4}
    assert sum(x["train"] for x in facts["labels"]) == 36  # counts of what is trained on, without the slice
    assert facts["selection"]["label"] == "news_train.csv held-out slice accuracy"
    assert "checkpoints: selected on a held-out 4 of 40 training examples" in "\n".join(setup_lines(facts))


def test_setup_of_a_jsonl_file_regression_and_single_text(tmp_path):
    rows = [{"review": f"review number {i}", "stars": 1.0 + i / 4, "id": i} for i in range(12)]
    for name in ("train.jsonl", "dev.jsonl"):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = prepare_data(
        toprune.load_tokenizer("minilm"),
        None,
        None,
        train_file=str(tmp_path / "train.jsonl"),
        validation_file=str(tmp_path / "dev.jsonl"),
        text_columns="review",
        label_column="stars",
        select_on="dev",
    )
    facts = setup_facts(data)
    assert facts["task_type"] == "regression" and "labels" not in facts
    assert facts["text_columns"] == ["review"] and facts["label_column"] == "stars"
    assert facts["metric_label"] == "dev.jsonl Pearson" and facts["sizes"]["dev"] == 12
    text = "\n".join(setup_lines(facts))
    assert "task type: regression" in text and "text columns: review; label column: stars" in text


@pytest.fixture(scope="module")
def news_teacher(tmp_path_factory):
    """A tiny 4-label model fine-tuned by `toprune finetune` on a 4-class CSV: what it printed and wrote."""
    folder = tmp_path_factory.mktemp("news")
    model, tokenizer = tiny_bert_with_tokenizer(num_hidden_layers=2, num_labels=4)
    model.save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    news_csv(folder / "train.csv", {y: 6 for y in WORDS})
    news_csv(folder / "dev.csv", {y: 2 for y in WORDS})
    return folder


def test_finetune_says_and_records_the_setup_and_eval_needs_only_the_data(news_teacher, capsys, tmp_path):
    folder = news_teacher
    assert (
        main(
            [
                "finetune",
                "--model",
                str(folder / "base"),
                "--train-file",
                str(folder / "train.csv"),
                "--validation-file",
                str(folder / "dev.csv"),
                "--epochs",
                "1",
                "--max-length",
                "48",
                "--select-on",
                "dev",
                "--output",
                str(tmp_path / "teacher"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("label -> id (sorted): '1'->0 (6 train, 2 dev)") == 1  # said once
    assert "schedule: epochs 1, steps 1" in out
    record = (tmp_path / "teacher" / "toprune_teacher.json").read_text()
    assert "mrpc" not in record.lower() and "custom" not in record
    record = json.loads(record)
    assert record["task"] == "train.csv" and record["setup"]["data"]["validation_file"] == "dev.csv"
    saved = json.loads((tmp_path / "teacher" / "toprune_task.json").read_text())
    assert saved["labels"] == ["1", "2", "3", "4"] and saved["text_columns"] == ["headline", "body"]
    assert saved["max_length"] == 48 and saved["task_type"] == "classification" and saved["task"] is None

    # eval: only the file to evaluate on (another file, other rows, same columns), labels from the saved task
    news_csv(tmp_path / "fresh.csv", {"4": 3, "2": 1})
    assert main(["eval", str(tmp_path / "teacher"), "--data", str(tmp_path / "fresh.csv"), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout stays JSON; the setup went to stderr
    assert "'4'->3 (3 dev)" in captured.err and "max length 48" in captured.err
    assert result["task"] == "fresh.csv" and result["setup"]["sizes"]["dev"] == 4
    assert result["setup"]["metric_label"] == "fresh.csv accuracy"
    # --validation-file alone means the same; no option at all: the recorded validation file
    assert main(["eval", str(tmp_path / "teacher"), "--validation-file", str(tmp_path / "fresh.csv")]) == 0
    assert "fresh.csv accuracy (4 examples)" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "teacher")]) == 0
    assert "as recorded in" in capsys.readouterr().out
    # a label the model never saw, and a file without the saved columns: one line each
    (tmp_path / "odd.csv").write_text("headline,body,label\na,b,7\n")
    assert main(["eval", str(tmp_path / "teacher"), "--data", str(tmp_path / "odd.csv")]) == 2
    assert "label '7'" in capsys.readouterr().err
    (tmp_path / "cols.csv").write_text("text,label\na,1\n")
    assert main(["eval", str(tmp_path / "teacher"), "--data", str(tmp_path / "cols.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks column(s) 'headline', 'body'" in err


def test_data_needs_a_model_that_carries_its_task(tmp_path, capsys):
    model, tokenizer = tiny_bert_with_tokenizer(num_hidden_layers=2, num_labels=2)
    toprune.save_pruned(model, tmp_path / "m", tokenizer)
    (tmp_path / "dev.csv").write_text("sentence,label\nhi,1\n")
    assert main(["eval", str(tmp_path / "m"), "--data", str(tmp_path / "dev.csv")]) == 2
    assert "toprune_task.json" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["finetune", "prune", "eval", "bench", "demo", "plot", "export"])
def test_help_shows_every_default(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    text = " ".join(sub.format_help().split())
    formatter = sub._get_formatter()
    for action in sub._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in formatter._get_help_string(action).lower(), action.dest
    if command == "finetune":
        for shown in ("(default: the task's searched recipe", "(default: minilm)", "(default: 57)"):
            assert shown in text
    if command in ("eval", "bench"):
        assert "task (its toprune_task.json), else mrpc" in text
    if command == "prune":  # the layers a plan can prune, from the code that decides it
        layers = toprune.default_pruning_layers(6)
        assert f"{layers[0]}-{layers[-1]} of a 6-layer model" in text and "(default: 5.0)" in text
        assert "measured against the dense model" in text


def test_run_plot_has_the_teacher_line_and_the_kept_marker(tmp_path):
    points = [
        {"step": s, "metric": m, "flops_reduction_unpadded": f}
        for s, m, f in [(50, 80.0, 1.0), (100, 84.0, 2.0), (150, 86.0, 2.0), (200, 85.0, 2.0)]
    ]
    fig = plot_run_history(
        [{"name": "top", "points": points, "kept_step": 150}], tmp_path / "p.png", "MRPC dev F1", reference=87.5
    )
    assert (tmp_path / "p.png").stat().st_size > 1000
    by_flops, by_step = fig.axes
    for ax in (by_flops, by_step):
        assert ax.get_ylabel() == "MRPC dev F1"
        flat = [line for line in ax.get_lines() if list(line.get_ydata()) == [87.5, 87.5]]
        assert len(flat) == 1 and flat[0].get_linestyle() == "--"
        stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
        assert len(stars) == 1 and list(stars[0].get_ydata()) == [86.0] and "kept, step 150" in stars[0].get_label()
    assert list(next(ln for ln in by_flops.get_lines() if ln.get_marker() == "*").get_xdata()) == [2.0]
    assert list(next(ln for ln in by_step.get_lines() if ln.get_marker() == "*").get_xdata()) == [150]
    assert by_step.get_xlabel() == "training step"  # the evaluations that share 2.0x are spread out by step


def test_plot_cli_reads_the_teacher_and_the_kept_step(tmp_path, capsys):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "toprune_teacher.json").write_text(json.dumps({"metric": 88.25}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "dev_metric": m, "dev_flops_reduction_unpadded": f}) + "\n"
            for s, m, f in [(50, 85.0, 1.2), (100, 84.0, 2.0)]
        )
    )
    (run / "summary.json").write_text(
        json.dumps(
            {
                "task": "dev.csv",
                "best": {"step": 100},
                "config": {"teacher": str(tmp_path / "teacher")},
                "setup": {"metric_label": "news_dev.csv accuracy"},
            }
        )
    )
    assert main(["plot", str(run), "--output", str(tmp_path / "p.png")]) == 0
    assert "teacher line: 88.25" in capsys.readouterr().out


def test_serving_folder_records_the_training_length_and_onnx_model_uses_it(tmp_path):
    from toprune.export import export_folder
    from toprune.serve import OnnxModel

    model, tokenizer = tiny_bert_with_tokenizer(num_hidden_layers=2, num_labels=2)
    model.config.id2label = {0: "neg", 1: "pos"}
    toprune.apply_pruning(model, toprune.PruningPlan.from_keep_ratios(2, {1: 0.5}))
    toprune.save_pruned(model, tmp_path / "m", tokenizer)
    (tmp_path / "m" / "toprune_task.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "task": None,
                "task_type": "classification",
                "labels": ["neg", "pos"],
                "text_columns": ["review"],
                "label_column": "label",
                "metric": "accuracy",
                "max_length": 24,
            }
        )
    )
    export_folder(str(tmp_path / "m"), tmp_path / "export")
    config = json.loads((tmp_path / "export" / "toprune_onnx.json").read_text())
    assert config["max_length"] == 24 and config["labels"] == ["neg", "pos"]
    assert config["task_type"] == "classification" and config["text_columns"] == ["review"]
    served = OnnxModel(tmp_path / "export")
    seen = []
    tokenize = served.tokenizer

    def spy(*args, **kwargs):
        seen.append(kwargs["max_length"])
        return tokenize(*args, **kwargs)

    served.tokenizer = spy
    long_text = " ".join(["word"] * 100)
    assert served.predict([long_text])[0]["label"] in ("neg", "pos")
    assert seen == [24]  # truncated as in training, not at the model's 512 positions
