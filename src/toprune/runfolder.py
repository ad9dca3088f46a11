"""A pruning run's folder (``metrics.jsonl``, ``checkpoint.pt``, ``summary.json``, ``best/``): checked when a run
opens it, so an earlier run is never replaced unasked and a damaged file is one line naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import ToPruneError
from .safeio import check_writable

RUN_FILES = ("metrics.jsonl", "checkpoint.pt", "summary.json", "best")
CHECKPOINT_KEYS = (
    "step",
    "student",
    "gates",
    "lambdas",
    "opt",
    "gate_opt",
    "lambda_opt",
    "schedule",
    "sampler",
    "rng",
    "best",
    "config",
)


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Before anything loads: the folder is writable, and a fresh run never replaces an earlier one unasked (its
    kept model, checkpoint and log are the user's work)."""
    check_writable(out)
    if overwrite or (resume and (out / "checkpoint.pt").exists()):
        return
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found:
        raise ToPruneError(
            f"{out} holds an earlier run ({', '.join(found)}): pass --resume to continue it, "
            f"--overwrite to replace it, or give a new --output"
        )


def make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToPruneError(f"cannot create --output {out}: {exc.strerror or type(exc).__name__}") from None


def clear_run(out: Path) -> None:
    """A fresh start allowed by :func:`check_run_folder`: nothing of an earlier run may survive."""
    for name in RUN_FILES:
        if name == "best":
            shutil.rmtree(out / name, ignore_errors=True)
        else:
            (out / name).unlink(missing_ok=True)


def read_checkpoint(path: Path, device) -> dict:
    import torch

    try:
        blob = torch.load(path, weights_only=False, map_location=device)
    except Exception as exc:  # noqa: BLE001 torch reports truncation as RuntimeError, EOFError, UnpicklingError...
        raise ToPruneError(
            f"cannot resume: {path} is truncated or corrupt ({type(exc).__name__}); restore it, or "
            f"start over with --overwrite"
        ) from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise ToPruneError(f"cannot resume: {path} is not a toprune checkpoint (no {missing[0]!r})")
    return blob


def read_metrics(path: Path) -> list[dict]:
    """The records of a run's metrics.jsonl; a partial last line (a kill mid-write) is left out, a bad line
    elsewhere is one error naming the file and line."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise ToPruneError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "step" not in record:
                raise ValueError("no step")
        except ValueError:
            if number == len(lines):
                break
            raise ToPruneError(f"{path} line {number} is not a metrics record; repair or delete that line") from None
        records.append(record)
    return records


def read_json(path: Path):
    """A JSON file toprune wrote (summaries, settings): a damaged one is one line naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ToPruneError(f"cannot read {path} ({type(exc).__name__}): repair or delete it") from None
