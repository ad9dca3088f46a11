"""A saved model carries its task: ``toprune_task.json`` beside ``config.json`` (written by ``finetune`` and with
every kept pruned model) holds the label names in id order, the text and label columns, the task type, the metric
and the max length it was trained at, so ``eval``, ``bench``, ``export`` and ``show`` need only the data to
evaluate on (``--data FILE``), or nothing at all while the recorded validation file is still where it was.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ToPruneError

TASK_FILENAME = "toprune_task.json"
FORMAT_VERSION = 1
_DEFAULT_TASK = "mrpc"


def task_spec(data, max_length: int) -> dict:
    """The task definition of a :class:`toprune.train.TaskData` (files as absolute paths, to be found again)."""
    from .report import metric_label, task_type

    source = dict(getattr(data, "source", {}) or {})
    files = {k: str(Path(v).resolve()) for k, v in source.items() if k.endswith("_file") and v}
    return {
        "format_version": FORMAT_VERSION,
        "task": source.get("task"),
        "task_type": task_type(data),
        "labels": None if data.labels is None else list(data.labels),
        "text_columns": list(source.get("text_columns") or ()) or None,
        "label_column": source.get("label_column"),
        "metric": data.metric,
        "metric_label": metric_label(data),
        "max_length": int(max_length),
        **files,
    }


def write_task(folder: str | Path, spec: dict) -> Path:
    path = Path(folder) / TASK_FILENAME
    path.write_text(json.dumps(spec, indent=1) + "\n")
    return path


def read_task(folder: str | Path | None) -> dict | None:
    """The saved task of a model folder, or None (older folders, hub ids, the packaged MiniLM)."""
    if not folder:
        return None
    path = Path(folder) / TASK_FILENAME
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToPruneError(f"corrupt {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(spec, dict) or spec.get("format_version") != FORMAT_VERSION:
        raise ToPruneError(f"{path}: unsupported task file (format_version {FORMAT_VERSION} expected)")
    return spec


# the saved model each command works on (finetune's --model is where training starts: its task is not the run's)
_MODEL_OPTION = {"prune": "teacher", "eval": "model", "bench": "pruned", "export": "model", "show": "model"}


def _model_folder(args) -> str | None:
    value = getattr(args, _MODEL_OPTION.get(getattr(args, "command", None), ""), None)
    return value if value and Path(value, TASK_FILENAME).is_file() else None


def apply_saved_task(args) -> dict | None:
    """Fill what the user left out from the model's saved task (CLI ``args`` in place); returns the task or None.

    --task: the saved one (else mrpc, or none with --train-file); --max-length: the training length; the user's
    own files: the saved columns, for ``prune`` the saved files, and for evaluation the recorded validation file
    when ``--data`` is not given and it is still there.
    """
    folder = _model_folder(args)
    spec = read_task(folder)
    data = getattr(args, "data", None)
    own_files = bool(getattr(args, "train_file", None))
    if data and (own_files or getattr(args, "validation_file", None)):
        raise ToPruneError("--data replaces --train-file/--validation-file for evaluation; give one or the other")
    if spec is None:
        if data:
            raise ToPruneError(
                f"--data needs a model that carries its task ({TASK_FILENAME}, written by `toprune "
                f"finetune` and `toprune prune`); else pass --train-file and --validation-file"
            )
        if getattr(args, "task", "") is None and not own_files:
            args.task = _DEFAULT_TASK
        return None
    args.saved_task, args.saved_task_folder = spec, folder
    if hasattr(args, "data") and not own_files and getattr(args, "validation_file", None):
        data = args.data = args.validation_file  # the labels come from the saved task, not a training file
        args.validation_file = None
    if getattr(args, "max_length", "") is None:
        args.max_length = spec["max_length"]
    if getattr(args, "task", "") is None and not own_files:
        args.task = spec.get("task")  # None: the user's own files
    if not hasattr(args, "task") or args.task is not None or own_files:
        return spec  # show/export, or the user chose the task or the files: nothing more to fill in
    if args.text_columns is None and spec.get("text_columns"):
        args.text_columns = ",".join(spec["text_columns"])
    if args.label_column is None:
        args.label_column = spec.get("label_column")
    if args.command == "prune":  # the teacher was fine-tuned on the user's files: prune on the same ones
        for key in ("train_file", "validation_file"):
            if spec.get(key) and Path(spec[key]).is_file():
                setattr(args, key, spec[key])
                args.files_recorded = True
        if not args.train_file:
            raise ToPruneError(
                f"teacher {folder} was fine-tuned on {spec.get('train_file')}, which is no longer "
                f"there: pass --train-file and --validation-file"
            )
    elif hasattr(args, "data") and not data:
        recorded = spec.get("validation_file")
        if not (recorded and Path(recorded).is_file()):
            raise ToPruneError(
                f"{folder} was trained on your own files; pass --data FILE (the labelled file to evaluate on)"
            )
        args.data, args.data_recorded = recorded, True
    return spec


def prepare_saved(tokenizer, spec: dict, data_file: str, max_length: int):
    """Evaluation data for a model with a saved task: ``data_file`` read with the saved columns and label ids."""
    from .squad import is_squad
    from .train import _task_data, prepare_data

    if is_squad(spec.get("task")):
        return prepare_data(tokenizer, spec["task"], None, max_length, dev_only=True, validation_file=data_file)
    from .userdata import load_user_validation

    labels = None if spec.get("labels") is None else tuple(spec["labels"])
    if not spec.get("text_columns") or not spec.get("label_column"):
        raise ToPruneError(
            f"the saved task of this model names no text/label columns; pass --train-file and "
            f"--validation-file instead of --data {data_file}"
        )
    dev = load_user_validation(data_file, tuple(spec["text_columns"]), spec["label_column"], labels)
    data = _task_data(Path(data_file).name, spec["metric"], labels, None, dev, tokenizer, max_length, None, 0, True)
    data.source = {
        "task": spec.get("task"),
        "validation_file": str(data_file),
        "text_columns": spec["text_columns"],
        "label_column": spec["label_column"],
    }
    return data
