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
