"""The user's own classification/regression data, the way HF ``run_glue.py`` takes ``--train_file/--validation_file``.

Formats by extension: ``.csv`` (comma, standard quoting), ``.tsv`` (tab, quote characters are data, as in GLUE) and
``.jsonl``/``.json`` (JSON Lines). The output has the columns of :func:`toprune.data.load_glue_split`: ``text_a``,
optionally ``text_b``, and ``label`` (str for classification, float for regression). Every problem with a file is
a one-line :class:`ToPruneError` naming the file and, where it applies, the 1-based data row (the header not counted).
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import ToPruneError

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json"}
_LABEL_CANDIDATES = ("label", "labels", "score", "target")
_TEXT_CANDIDATES = (
    ("sentence1", "sentence2"),
    ("text_a", "text_b"),
    ("question", "sentence"),
    ("premise", "hypothesis"),
    ("sentence",),
    ("text",),
)
# Fewer distinct numeric labels than this look like class ids ("0"/"1", star ratings 1..5), not scores.
_REGRESSION_MIN_DISTINCT = 10


@dataclass(frozen=True)
class UserTaskInfo:
    text_columns: tuple[str, ...]  # 1 or 2 source column names
    label_column: str
    labels: tuple[str, ...] | None  # sorted label strings seen in training; None: regression

    @property
    def is_regression(self) -> bool:
        return self.labels is None


TASK_TYPES = ("classification", "regression")


def load_user_data(
    train_file, validation_file, text_columns=None, label_column=None, regression=None, task_type: str | None = None
):
    """``(train, validation, info)``: two ``datasets.Dataset`` with text_a[, text_b], label, and the task found.

    Columns not given are inferred from the training file (see ``_infer_label_column``/``_infer_text_columns``).
    ``task_type`` ("classification" or "regression"; or the older ``regression=True/False``) says what the labels
    are; ``None`` infers it: every training label numeric and more than 10 distinct values is regression.
    Numeric class labels are normalised (``1`` and ``1.0`` are one class, see ``_labels``); NaN/inf labels are
    refused, and so is training data with a single class (or a constant regression target).
    """
    if task_type is not None:
        if task_type not in TASK_TYPES:
            raise ToPruneError(f"--task-type must be one of {', '.join(TASK_TYPES)}, got {task_type!r}")
        regression = task_type == "regression"
    train = read_table(train_file)
    validation = read_table(validation_file)

    if label_column is None:
        label_column = _infer_label_column(train_file, train.column_names)
    if text_columns is None:
        text_columns = _infer_text_columns(train_file, train, label_column)
    elif isinstance(text_columns, str):
        text_columns = (text_columns,)
    text_columns = tuple(text_columns)
    if not 1 <= len(text_columns) <= 2:
        raise ToPruneError(f"text_columns takes 1 or 2 column names, got {len(text_columns)}")
    if len(set(text_columns)) < len(text_columns) or label_column in text_columns:
        raise ToPruneError(
            f"--text-columns {','.join(text_columns)} with --label-column {label_column}: a column "
            f"can be used once (text or label)"
        )
    for path, ds in ((train_file, train), (validation_file, validation)):
        missing = [c for c in (*text_columns, label_column) if c not in ds.column_names]
        if missing:
            raise ToPruneError(f"{path} lacks column(s) {', '.join(map(repr, missing))}")

    train_texts = [_texts(train_file, train, c) for c in text_columns]
    val_texts = [_texts(validation_file, validation, c) for c in text_columns]
    train_labels = _labels(train_file, train, label_column)
    val_labels = _labels(validation_file, validation, label_column)

    if regression is None:
        regression = _looks_like_regression(train_labels)
    if regression:
        labels = None
        train_labels = _floats(train_file, train_labels, label_column)
        val_labels = _floats(validation_file, val_labels, label_column)
        if len(set(train_labels)) < 2:
            raise ToPruneError(
                f"{train_file}: every target in column {label_column!r} is {train_labels[0]:g}; "
                f"a regression needs targets that vary"
            )
    else:
        _one_spelling(train_file, train_labels)
        labels = tuple(sorted(set(train_labels)))
        if len(labels) < 2:
            raise ToPruneError(
                f"{train_file}: every label in column {label_column!r} is {labels[0]!r}; a classifier "
                f"needs at least two classes (for a numeric target pass --task-type regression)"
            )
        known = set(labels)
        for row, label in enumerate(val_labels, start=1):
            if label not in known:
                raise ToPruneError(
                    f"{validation_file} row {row}: label {label!r} in column {label_column!r} "
                    f"never occurs in {train_file} (training labels: {', '.join(labels)})"
                )

    info = UserTaskInfo(text_columns, label_column, labels)
    return _build(train_texts, train_labels, regression), _build(val_texts, val_labels, regression), info


def read_table(path, column_names=None):
    """The raw file as a ``datasets.Dataset``: CSV/TSV columns all strings, JSON Lines as typed by the JSON.

    ``column_names`` is for CSV/TSV files without a header row (GLUE's CoLA): every line is then data.
    """
    import datasets
    import pandas

    fmt = _FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ToPruneError(
            f"{path}: unsupported file type {Path(path).suffix or '(none)'!r}; use one of {', '.join(_FORMATS)}"
        )
    if not Path(path).is_file():
        raise ToPruneError(f"data file not found: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if fmt == "json":
                columns = None
                has_rows = any(line.strip() for line in f)
            else:
                # the header as the reader will see it: tabs only for TSV, csv quoting for CSV
                if column_names:
                    columns = list(column_names)
                else:
                    header = f.readline().rstrip("\r\n")
                    columns = header.split("\t") if fmt == "tsv" else next(csv.reader([header]), [])
                has_rows = any(line.strip() for line in f)
    except (OSError, UnicodeDecodeError) as exc:
        raise ToPruneError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if columns is not None and not any(c.strip() for c in columns):
        raise ToPruneError(f"{path} is empty (no header row)")
    if columns is not None:  # pandas would rename a repeated name to "name.1": one of the two is then never read
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ToPruneError(f"{path}: column {repeated[0]!r} appears more than once in the header")
    if not has_rows:  # datasets would fail with StopIteration or "corresponds to no data"
        raise ToPruneError(f"{path} has no data rows")

    if fmt == "json":
        options = {}
    else:
        # every column as text: labels like "0"/"1" and ids stay strings, "null"/"NA" are not turned into missing
        # index_col=False: else pandas silently takes the extra leading fields of a too-long row as an index
        options = dict(
            keep_default_na=False,
            encoding="utf-8-sig",
            index_col=False,
            features=datasets.Features({c: datasets.Value("string") for c in columns}),
        )
        if fmt == "tsv":
            options.update(sep="\t", quoting=csv.QUOTE_NONE)  # quote characters in TSV text are data
        if column_names:
            options.update(header=None, names=list(column_names))
    try:
        with warnings.catch_warnings():
            # ...and with index_col=False it drops those fields with only a warning: make that an error
            warnings.simplefilter("error", pandas.errors.ParserWarning)
            ds = datasets.load_dataset(
                "csv" if fmt == "tsv" else fmt, data_files={"data": str(path)}, split="data", **options
            )
    except Exception as exc:  # pandas/arrow parse errors come in many types; the user needs one line
        raise ToPruneError(f"cannot read {path}: {_first_line(exc)}") from None
    if ds.num_rows == 0:
        raise ToPruneError(f"{path} has no data rows")
    return ds


def _first_line(exc: BaseException) -> str:
    # datasets wraps the parser's error in a generic DatasetGenerationError; the cause says what is wrong
    while exc.__cause__ is not None and type(exc).__name__ == "DatasetGenerationError":
        exc = exc.__cause__
    if type(exc).__name__ == "ParserWarning":  # raised as an error above
        return "a row has more fields than the header"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _infer_label_column(path, columns) -> str:
    for name in _LABEL_CANDIDATES:
        if name in columns:
            return name
    raise ToPruneError(
        f"{path}: no label column (looked for {', '.join(_LABEL_CANDIDATES)}); "
        f"pass label_column, one of {', '.join(columns)}"
    )


def _infer_text_columns(path, ds, label_column) -> tuple[str, ...]:
    for names in _TEXT_CANDIDATES:
        if all(n in ds.column_names for n in names):
            return names
    # no known layout: a file with just one or two text columns beside the label is unambiguous
    rest = [
        c
        for c in ds.column_names
        if c != label_column and getattr(ds.features[c], "dtype", None) in ("string", "large_string")
    ]
    if 1 <= len(rest) <= 2:
        return tuple(rest)
    raise ToPruneError(
        f"{path}: cannot tell the text column(s) among {', '.join(ds.column_names)}; "
        f"pass text_columns (one or two names)"
    )


def _texts(path, ds, column) -> list[str]:
    # JSON values may be numbers: text is text, so they become their str()
    texts = ["" if v is None else str(v) for v in ds[column]]
    for row, text in enumerate(texts, start=1):
        if not text.strip():
            raise ToPruneError(f"{path} row {row}: empty text in column {column!r}")
    return texts


def _labels(path, ds, column) -> list[str]:
    """Labels as strings: surrounding spaces are typos; a whole number written with a fraction or exponent
    (``1.0``, JSON 1.0, ``1e0``) is that integer (``1``), while integers keep their spelling (codes like ``007``).
    A NaN or infinite label is a missing value, never a class."""
    labels = []
    for row, value in enumerate(ds[column], start=1):
        label = "" if value is None else str(value).strip()
        if not label:
            raise ToPruneError(f"{path} row {row}: empty label in column {column!r}")
        try:
            number = float(label)
        except ValueError:
            number = None
        if number is not None:
            if not math.isfinite(number):
                raise ToPruneError(f"{path} row {row}: label {label!r} in column {column!r} is not a usable value")
            if number.is_integer() and any(c in label for c in ".eE") and abs(number) < 2**53:
                label = str(int(number))
        labels.append(label)
    return labels


def _one_spelling(path, labels: list[str]) -> None:
    """Class labels: two spellings of one number that remain (``7``, ``007``) are refused, not two classes."""
    seen = {}
    for row, label in enumerate(labels, start=1):
        number = _as_float(label)
        if number is not None:
            first = seen.setdefault(number, (label, row))
            if first[0] != label:
                raise ToPruneError(
                    f"{path} row {row}: label {label!r} is the number of {first[0]!r} (row "
                    f"{first[1]}) written another way; write each class one way"
                )


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None  # "nan"/"inf" parse but are no usable target


def _looks_like_regression(labels: list[str]) -> bool:
    # numeric labels alone do not make regression: class ids are numbers too; many distinct values do
    return all(_as_float(t) is not None for t in labels) and len(set(labels)) > _REGRESSION_MIN_DISTINCT


def _floats(path, labels: list[str], column: str) -> list[float]:
    values = []
    for row, label in enumerate(labels, start=1):
        value = _as_float(label)
        if value is None:
            raise ToPruneError(f"{path} row {row}: regression label {label!r} in column {column!r} is not a number")
        values.append(value)
    return values


def _build(texts: list[list[str]], labels: list, regression: bool):
    """The GLUE-loader layout: text_a[, text_b], label (string, or float64 for regression)."""
    import datasets

    columns = {f"text_{'ab'[i]}": column for i, column in enumerate(texts)}
    features = {name: datasets.Value("string") for name in columns}
    features["label"] = datasets.Value("float64" if regression else "string")
    return datasets.Dataset.from_dict({**columns, "label": labels}, features=datasets.Features(features))


def load_user_validation(path, text_columns: tuple[str, ...], label_column: str, labels: tuple[str, ...] | None):
    """One labelled file for evaluation, read with a saved task's columns and labels (``None``: regression):
    a model that carries its task needs no training file to know its label ids."""
    ds = read_table(path)
    missing = [c for c in (*text_columns, label_column) if c not in ds.column_names]
    if missing:
        raise ToPruneError(
            f"{path} lacks column(s) {', '.join(map(repr, missing))} (the model was trained on "
            f"text {', '.join(text_columns)} and label {label_column!r})"
        )
    texts = [_texts(path, ds, c) for c in text_columns]
    values = _labels(path, ds, label_column)
    if labels is None:
        return _build(texts, _floats(path, values, label_column), True)
    known = set(labels)
    for row, label in enumerate(values, start=1):
        if label not in known:
            raise ToPruneError(
                f"{path} row {row}: label {label!r} in column {label_column!r} is not one the model "
                f"knows ({', '.join(labels)})"
            )
    return _build(texts, values, False)
