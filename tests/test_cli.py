"""CLI error paths: one line on stderr, exit code 2, never a traceback."""

import subprocess
import sys

import pytest

from toprune.cli import build_parser, main


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
    assert main(["prune", "--teacher", str(tmp_path), "--task", "mrpc", "--output", str(tmp_path / "o"),
                 "--target", "fast", "--data-dir", str(data_dir / "glue")]) == 2
    assert "bad FLOPs target 'fast'" in capsys.readouterr().err
    assert main(["prune", "--teacher", str(tmp_path / "nope"), "--task", "mrpc", "--output", str(tmp_path / "o"),
                 "--data-dir", str(data_dir / "glue")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    code, _, err = run_cli("eval", str(tmp_path), "--task", "rte", "--data-dir", str(tmp_path))
    assert code == 2 and "Traceback" not in err and err.strip().startswith("toprune: error:")


def test_eval_and_bench_json_on_tiny_models(tmp_path, data_dir, capsys):
    """`eval` and `bench --json` end to end on a tiny dense model and its pruned copy (real MRPC dev inputs)."""
    import json

    import torch
    import transformers

    import toprune

    tokenizer = toprune.load_tokenizer("minilm")
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4,
                                     num_attention_heads=4, intermediate_size=64, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    toprune.save_pruned(model, tmp_path / "dense", tokenizer)
    toprune.apply_pruning(model, toprune.PruningPlan.from_keep_ratios(4, {1: 0.5, 2: 0.5}))
    toprune.save_pruned(model, tmp_path / "pruned", tokenizer)
    glue = str(data_dir / "glue")
    assert main(["eval", str(tmp_path / "pruned"), "--task", "mrpc", "--data-dir", glue, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["flops_reduction_unpadded"] > 1.5 and evaluated["flops_reduction_padded"] > 2
    assert main(["bench", "--dense", str(tmp_path / "dense"), "--pruned", str(tmp_path / "pruned"), "--task", "mrpc",
                 "--data-dir", glue, "--examples", "8", "--batch-sizes", "1,4", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("task", "metric_name", "speedup_b1", "speedup_b4"):
        assert key in result
    for key in ("metric", "latency_ms_b1", "latency_ms_b4"):
        assert key in result["dense"] and key in result["pruned"]
    assert result["pruned"]["flops_reduction_unpadded"] == pytest.approx(evaluated["flops_reduction_unpadded"])
    assert result["dense"]["flops_reduction_unpadded"] == 1.0 and "latency_ms_b4" in result["dense_onnxruntime"]
    assert main(["bench", "--dense", str(tmp_path / "pruned"), "--pruned", str(tmp_path / "pruned"), "--task",
                 "mrpc", "--data-dir", glue]) == 2
    assert "is a pruned model" in capsys.readouterr().err
