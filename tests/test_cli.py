"""CLI error paths: one line on stderr, exit code 2, never a traceback."""

import subprocess
import sys

import pytest
import torch

from toprune.cli import build_parser, main

from .conftest import tiny_bert_with_tokenizer


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "toprune.cli", *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("command", ["finetune", "prune", "eval", "bench", "demo"])
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    assert "example:" in capsys.readouterr().out


def test_unknown_task_is_one_line(capsys):
    assert main(["eval", "some/model", "--task", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown GLUE task 'nope'" in err


def test_missing_data_dir_is_one_line(capsys, tmp_path):
    assert main(["eval", str(tmp_path), "--task", "mrpc", "--data-dir", str(tmp_path / "none")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_model_folder_without_config(capsys, tmp_path, data_dir):
    assert main(["eval", str(tmp_path), "--task", "mrpc", "--data-dir", str(data_dir / "glue")]) == 2
    assert "not a Hugging Face model folder" in capsys.readouterr().err


def test_bad_target_and_missing_teacher(capsys, tmp_path, data_dir):
    assert (
        main(
            [
                "prune",
                "--teacher",
                str(tmp_path),
                "--task",
                "mrpc",
                "--output",
                str(tmp_path / "o"),
                "--target",
                "fast",
                "--data-dir",
                str(data_dir / "glue"),
            ]
        )
        == 2
    )
    assert "bad FLOPs target 'fast'" in capsys.readouterr().err
    assert (
        main(
            [
                "prune",
                "--teacher",
                str(tmp_path / "nope"),
                "--task",
                "mrpc",
                "--output",
                str(tmp_path / "o"),
                "--data-dir",
                str(data_dir / "glue"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    code, _, err = run_cli("eval", str(tmp_path), "--task", "rte", "--data-dir", str(tmp_path))
    assert code == 2 and "Traceback" not in err and err.strip().startswith("toprune: error:")


def test_eval_and_bench_json_on_tiny_models(tmp_path, data_dir, capsys):
    """`eval` and `bench --json` end to end on a tiny dense model and its pruned copy (real MRPC dev inputs)."""
    import json

    import toprune

    model, tokenizer = tiny_bert_with_tokenizer(num_hidden_layers=4, num_labels=2)
    toprune.save_pruned(model, tmp_path / "dense", tokenizer)
    toprune.apply_pruning(model, toprune.PruningPlan.from_keep_ratios(4, {1: 0.5, 2: 0.5}))
    toprune.save_pruned(model, tmp_path / "pruned", tokenizer)
    glue = str(data_dir / "glue")
    assert main(["eval", str(tmp_path / "pruned"), "--task", "mrpc", "--data-dir", glue, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["flops_reduction_unpadded"] > 1.5 and evaluated["flops_reduction_padded"] > 2
    assert (
        main(
            [
                "bench",
                "--dense",
                str(tmp_path / "dense"),
                "--pruned",
                str(tmp_path / "pruned"),
                "--task",
                "mrpc",
                "--data-dir",
                glue,
                "--examples",
                "8",
                "--batch-sizes",
                "1,4",
                "--repeats",
                "1",
                "--int8",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert set(result["int8"]) == {"dense_ms_b1", "dense_ms_b4", "pruned_ms_b1", "pruned_ms_b4"}  # eager + INT8 rows
    for key in ("task", "metric_name", "speedup_b1", "speedup_b4"):
        assert key in result
    for key in ("metric", "latency_ms_b1", "latency_ms_b4"):
        assert key in result["dense"] and key in result["pruned"]
    assert result["pruned"]["flops_reduction_unpadded"] == pytest.approx(evaluated["flops_reduction_unpadded"])
    assert result["dense"]["flops_reduction_unpadded"] == 1.0 and "latency_ms_b4" in result["dense_onnxruntime"]
    # ONNX vs ONNX: both graphs exported and parity-checked, then timed with the same protocol (+ INT8)
    assert (
        main(
            [
                "bench",
                "--dense",
                str(tmp_path / "dense"),
                "--pruned",
                str(tmp_path / "pruned"),
                "--task",
                "mrpc",
                "--data-dir",
                glue,
                "--examples",
                "8",
                "--batch-sizes",
                "1,4",
                "--repeats",
                "1",
                "--backend",
                "onnxruntime",
                "--int8",
                "--json",
            ]
        )
        == 0
    )
    on_ort = json.loads(capsys.readouterr().out)
    assert on_ort["backend"] == "onnxruntime" and on_ort["protocol"]["compared"].startswith("dense ONNX Runtime vs")
    assert on_ort["metric_computed_in"] == "ONNX Runtime" and result["metric_computed_in"] == "PyTorch"
    assert on_ort["pruned"]["metric"] == pytest.approx(result["pruned"]["metric"], abs=1.0)  # parity-checked graphs
    assert on_ort["dense"]["latency_ms_b1"] == on_ort["dense_onnxruntime"]["latency_ms_b1"]
    assert set(on_ort["int8"]) == {"dense_ms_b1", "dense_ms_b4", "pruned_ms_b1", "pruned_ms_b4"}
    assert (
        main(
            [
                "bench",
                "--dense",
                str(tmp_path / "pruned"),
                "--pruned",
                str(tmp_path / "pruned"),
                "--task",
                "mrpc",
                "--data-dir",
                glue,
            ]
        )
        == 2
    )
    assert "is a pruned model" in capsys.readouterr().err


def test_show_and_plot(tmp_path, capsys):
    import json

    import toprune

    model, tokenizer = tiny_bert_with_tokenizer(num_hidden_layers=4, num_labels=2)
    toprune.apply_pruning(model, toprune.PruningPlan.from_keep_ratios(4, {1: 0.5, 3: 0.5}))
    toprune.save_pruned(model, tmp_path / "pruned", tokenizer)
    assert (
        main(
            [
                "show",
                str(tmp_path / "pruned"),
                "one two three four five six seven eight",
                "--html",
                str(tmp_path / "s.html"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    counts = [int(line.split("(")[1].split()[0]) for line in lines if line.startswith("layer")]
    assert counts == [10, 1 + 5, 6, 1 + 3]  # CLS + 8 words + SEP, then the plan's counts
    assert lines[-2].startswith("prediction: LABEL_") and "(score 0." in lines[-2]
    assert (tmp_path / "s.html").read_text().count("<tr>") == 4
    run = tmp_path / "run"
    run.mkdir()
    records = [
        {"step": s, "dev_metric": m, "dev_flops_reduction_unpadded": f}
        for s, m, f in [(50, 85.0, 1.2), (100, 84.0, 2.0)]
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["plot", str(run), "--output", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["plot", str(tmp_path)]) == 2


def test_pruned_model_drops_into_a_hf_pipeline(minilm):
    import transformers

    import toprune

    model, tokenizer = minilm
    texts = ["a short one", "a rather longer sentence that will lose some of its tokens on the way up"]
    dense = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)(texts)
    toprune.apply_pruning(model)  # keep-all: the pipeline must give exactly the dense answers
    assert transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)(texts) == dense
    toprune.apply_pruning(model, toprune.PruningPlan.from_keep_ratios(6, {layer: 0.5 for layer in range(2, 6)}))
    pruned = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)(texts)
    with torch.no_grad():
        probs = [model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0] for text in texts]
    assert [p["label"] for p in pruned] == [model.config.id2label[int(x.argmax())] for x in probs]
    assert [p["score"] for p in pruned] == pytest.approx([float(x.max()) for x in probs], abs=1e-5)


def test_label_count_mismatch_and_lonely_validation_file(tmp_path, data_dir, capsys):

    import toprune

    model, tokenizer = tiny_bert_with_tokenizer(num_hidden_layers=2, num_labels=3)
    toprune.save_pruned(model, tmp_path / "m", tokenizer)
    assert main(["eval", str(tmp_path / "m"), "--task", "mrpc", "--data-dir", str(data_dir / "glue")]) == 2
    assert "predicts 3 labels but task mrpc has 2" in capsys.readouterr().err
    (tmp_path / "dev.csv").write_text("sentence,label\nhi,1\n")
    assert main(["eval", str(tmp_path / "m"), "--validation-file", str(tmp_path / "dev.csv")]) == 2
    assert "--validation-file needs --train-file" in capsys.readouterr().err


def test_bad_numbers_are_rejected_by_the_parser(capsys):
    for argv in (
        ["bench", "--dense", "a", "--pruned", "b", "--batch-sizes", "1,x"],
        ["prune", "--teacher", "a", "--output", "b", "--eval-every", "0"],
        ["profile", "minilm", "--check-plans", "-1"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


def test_prune_options_come_from_the_config_and_build_the_same_config(tmp_path):
    """One source of defaults: the parsed `prune` options without flags give PruneConfig's defaults, every option
    maps to its field (negated switches too), and the task defaults agree between the CLI and the API."""
    from dataclasses import asdict

    from toprune.commands import _prune_config
    from toprune.prune_config import PruneConfig, task_defaults

    def config(*flags, task="mrpc"):
        args = build_parser().parse_args(["prune", "--teacher", "t", "--output", "o", "--task", task, *flags])
        args.max_length, args.padded_length = task_defaults(args.task, args.max_length, args.padded_length)
        return _prune_config(args, "t", "o", None)

    plain = asdict(config())
    api = asdict(PruneConfig(teacher="t", task="mrpc", output_dir="o"))
    assert plain == api
    assert asdict(config(task="squad")) == asdict(PruneConfig(teacher="t", task="squad", output_dir="o"))
    assert PruneConfig(task="squad").max_length == 384 and PruneConfig(task="squad").padded_length == 384
    changed = config(
        "--no-ranking",
        "--no-fit-plan",
        "--bins",
        "7",
        "--eval-every",
        "9",
        "--scorer",
        "question",
        "--method",
        "static",
        "--hard-epochs",
        "0.5",
        "--inference-threads",
        "3",
    )
    assert (changed.ranking, changed.fit_plan, changed.layer_gates) == (False, False, True)
    assert (changed.num_bins, changed.eval_every, changed.save_every) == (7, 9, 9)
    assert (changed.scorer, changed.method, changed.hard_epochs, changed.inference_threads) == (
        "question",
        "static",
        0.5,
        3,
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prune", "--teacher", "t", "--output", "o", "--method", "magic"])
