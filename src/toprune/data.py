"""GLUE tasks in the standard TSV layout, read through ``datasets`` (local folder first, the hub when online).

The official TSVs carry quote characters as data: they are read with ``quoting=QUOTE_NONE`` (3), or rows are lost
(QNLI dev would give 5,267 rows instead of 5,463). Missing values are not guessed (``keep_default_na=False``):
a sentence that reads "null" stays "null". The reading itself is :func:`toprune.userdata.read_table`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ToPruneError


@dataclass(frozen=True)
class GlueTask:
    name: str  # lower-case GLUE name: "mrpc", "sst2", ...
    folder: str  # folder in the GLUE layout
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] | None  # None: regression
    metric: str  # the headline metric, GLUE's choice
    dev_files: tuple[str, ...] = ("dev.tsv",)
    header: tuple[str, ...] | None = None  # column names for files without a header row

    @property
    def is_regression(self) -> bool:
        return self.labels is None


GLUE_TASKS = {
    t.name: t
    for t in [
        GlueTask(
            "cola",
            "CoLA",
            ("sentence",),
            "label",
            ("0", "1"),
            "mcc",
            header=("source", "label", "original_label", "sentence"),
        ),
        GlueTask("sst2", "SST-2", ("sentence",), "label", ("0", "1"), "accuracy"),
        GlueTask("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), "f1"),
        GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), "score", None, "pearson"),
        GlueTask("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), "accuracy"),
        GlueTask(
            "mnli",
            "MNLI",
            ("sentence1", "sentence2"),
            "gold_label",
            ("contradiction", "entailment", "neutral"),
            "accuracy",
            dev_files=("dev_matched.tsv", "dev_mismatched.tsv"),
        ),
        GlueTask("qnli", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"), "accuracy"),
        GlueTask("rte", "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), "accuracy"),
        GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), "label", ("0", "1"), "accuracy"),
    ]
}
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli_matched": "mnli"}


def glue_task(name: str) -> GlueTask:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in GLUE_TASKS:
        raise ToPruneError(f"unknown GLUE task {name!r}; choose one of {', '.join(sorted(GLUE_TASKS))}")
    return GLUE_TASKS[key]


def glue_file(data_dir: str | Path, task: GlueTask, split: str) -> Path:
    """Path of a split ("train", "dev", "dev_mismatched", ...) in a GLUE folder, with a one-line error if absent."""
    root = Path(data_dir)
    if (root / "glue").is_dir() and not (root / task.folder).is_dir():
        root = root / "glue"  # accept the shared data folder itself as well as its glue/ subfolder
    name = task.dev_files[0] if split == "dev" else f"{split}.tsv"
    path = root / task.folder / name
    if not path.is_file():
        raise ToPruneError(f"{task.name} {split} file not found: {path}")
    return path


def load_glue_split(data_dir: str | Path | None, task_name: str, split: str):
    """A ``datasets.Dataset`` of one split with columns text_a[, text_b] and label (str, or float for STS-B).

    ``data_dir=None`` reads the hub dataset (``nyu-mll/glue``), for machines that are online.
    """
    from .userdata import read_table

    task = glue_task(task_name)
    if data_dir is None:
        return _load_glue_from_hub(task, split)
    path = glue_file(data_dir, task, split)
    ds = read_table(path, column_names=task.header)
    missing = [c for c in (*task.text_columns, task.label_column) if c not in ds.column_names]
    if missing:
        raise ToPruneError(f"{path} lacks column(s) {', '.join(missing)}")
    rename = {c: f"text_{'ab'[i]}" for i, c in enumerate(task.text_columns)}
    rename[task.label_column] = "label"
    ds = ds.select_columns(list(rename)).rename_columns(rename)
    labels = _checked_labels(path, task, ds["label"])
    if task.is_regression:
        ds = ds.map(lambda row, i: {"label": labels[i]}, with_indices=True)
    return ds


def _checked_labels(path: Path, task: GlueTask, values: list) -> list:
    """Every label a class of the task (or a finite score), else one line naming the row (1-based, header not
    counted, as for the user's files)."""
    import math

    out = []
    for row, value in enumerate(values, start=1):
        text = (value or "").strip()
        if task.is_regression:
            try:
                score = float(text)
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                raise ToPruneError(f"{path} row {row}: score {value!r} in column {task.label_column!r} is not a number")
            out.append(score)
        elif value not in task.labels:
            raise ToPruneError(
                f"{path} row {row}: label {value!r} in column {task.label_column!r} is not one of "
                f"{', '.join(task.labels)}"
            )
        else:
            out.append(value)
    return out


def default_glue_dir() -> Path | None:
    """``../shared/data/glue`` (from the working directory) when it exists, else None (the hub)."""
    candidate = Path.cwd().parent / "shared" / "data" / "glue"
    return candidate if candidate.is_dir() else None


def _load_glue_from_hub(task: GlueTask, split: str):
    import datasets

    hub_split = {
        "dev": "validation_matched" if task.name == "mnli" else "validation",
        "dev_mismatched": "validation_mismatched",
    }.get(split, split)
    try:
        ds = datasets.load_dataset("nyu-mll/glue", task.name, split=hub_split)
    except Exception as exc:  # offline, or the hub said no: the user needs to know what to pass instead
        raise ToPruneError(
            f"no local GLUE folder given and the hub dataset nyu-mll/glue/{task.name} could not be "
            f"loaded ({str(exc).splitlines()[0][:120]}); pass --data-dir PATH/TO/glue"
        ) from None
    names = {
        "sst2": ("sentence",),
        "cola": ("sentence",),
        "mrpc": ("sentence1", "sentence2"),
        "stsb": ("sentence1", "sentence2"),
        "qqp": ("question1", "question2"),
        "mnli": ("premise", "hypothesis"),
        "qnli": ("question", "sentence"),
        "rte": ("sentence1", "sentence2"),
        "wnli": ("sentence1", "sentence2"),
    }[task.name]
    class_names = None if task.is_regression else ds.features["label"].names

    def convert(row):
        out = {f"text_{'ab'[i]}": row[c] for i, c in enumerate(names)}
        if task.is_regression:
            out["label"] = float(row["label"])
        else:  # the TSV layout's label strings: "0"/"1" where GLUE's files use ids, else the class names
            out["label"] = str(row["label"]) if task.labels == ("0", "1") else class_names[row["label"]]
        return out

    return ds.map(convert, remove_columns=ds.column_names)
