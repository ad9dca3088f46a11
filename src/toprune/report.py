"""Say what was inferred: the data, columns, task type, label ids, sizes and schedule of a command, printed once at
its start and recorded in its output folder's JSON; and a wall-time estimate from the first training steps.

A user with their own files learns here, before any time is spent, how the files were read (which columns are
text, which is the label, that labels "1".."4" became ids 0..3 in sorted order) and how long the run will take.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from .data import GLUE_TASKS

_PRETTY_METRIC = {"f1": "F1", "accuracy": "accuracy", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman"}
_MAX_LABELS_SHOWN = 20  # a 100-class task still gets one readable line


def pretty_metric(metric: str) -> str:
    return _PRETTY_METRIC.get(metric, metric)


def task_type(data) -> str:
    if data.kind == "qa":
        return "question answering"
    if data.kind == "embedding":
        return "sentence embedding (unlabelled text; the target is the dense teacher's pooled embedding)"
    return "regression" if data.labels is None else "classification"


def metric_label(data) -> str:
    """The axis label of the headline metric: "MRPC dev F1", "dev.csv accuracy", "SQuAD v1.1 dev F1"."""
    source = getattr(data, "source", {}) or {}
    if data.kind == "qa":
        return f"SQuAD {data.qa.version} dev {pretty_metric(data.metric)}"
    if source.get("validation_file"):
        return f"{Path(source['validation_file']).name} {pretty_metric(data.metric)}"
    glue = GLUE_TASKS.get(data.name)
    return f"{glue.folder if glue else data.name} dev {pretty_metric(data.metric)}"


def selection_size(data) -> int | None:
    """Size of the held-out selection slice of the training data that picks the kept checkpoint (None: no slice,
    checkpoints are chosen on dev, or nothing is trained)."""
    selection = getattr(data, "selection", None)
    return None if selection is None else len(selection)


def selection_label(data) -> str:
    """The axis label of the metric checkpoints are chosen on: the held-out slice of the training data, or dev."""
    if getattr(data, "selection", None) is None:
        return metric_label(data)
    source = getattr(data, "source", {}) or {}
    glue = GLUE_TASKS.get(data.name)
    default = f"{glue.folder if glue else data.name} train"
    name = Path(source["train_file"]).name if source.get("train_file") else default
    return f"{name} held-out slice {pretty_metric(data.metric)}"


def _counts(split) -> Counter:
    if split is None or "labels" not in split.column_names:
        return Counter()
    return Counter(int(x) for x in split["labels"])


def setup_facts(data, schedule: dict | None = None, max_length: int | None = None) -> dict:
    """The JSON-able facts of a command's setup (see :func:`setup_lines` for how they are printed)."""
    source = dict(getattr(data, "source", {}) or {})
    facts = {
        "data": {
            k: (Path(v).name if k.endswith("_file") and v else v)
            for k, v in source.items()
            if k not in ("text_columns", "label_column")
        },
        "task_type": task_type(data),
        "metric": data.metric,
        "metric_label": metric_label(data),
    }
    info = getattr(data, "selection_info", None)
    if info is not None and data.train is not None:
        facts["selection"] = {**info.as_dict(), "label": selection_label(data), "described": info.describe()}
    if data.kind not in ("qa", "embedding"):
        facts["text_columns"] = list(source.get("text_columns") or ())
        facts["label_column"] = source.get("label_column")
    if data.kind != "qa" and data.labels is not None:
        train, dev = _counts(data.train), _counts(data.dev)
        facts["labels"] = [
            {"label": name, "id": i, "train": train.get(i, 0), "dev": dev.get(i, 0)}
            for i, name in enumerate(data.labels)
        ]
    sizes = {
        "train": None if data.train is None else len(data.train),
        "selection": selection_size(data),
        "dev": len(data.dev),
    }
    if data.kind == "qa":  # examples are questions; a long context makes several windows
        sizes = {
            "train_windows": sizes["train"],
            "selection": sizes["selection"],
            "dev_questions": len(data.qa.examples),
            "dev_windows": len(data.dev),
        }
    facts["sizes"] = sizes
    if max_length:
        facts["max_length"] = max_length
    if schedule:
        facts["schedule"] = schedule
    return facts


def _label_line(labels: list[dict], with_train: bool) -> str:
    shown = [
        f"{x['label']!r}->{x['id']} ({x['train']} train, {x['dev']} dev)"
        if with_train
        else f"{x['label']!r}->{x['id']} ({x['dev']} dev)"
        for x in labels[:_MAX_LABELS_SHOWN]
    ]
    more = f", ... ({len(labels) - _MAX_LABELS_SHOWN} more)" if len(labels) > _MAX_LABELS_SHOWN else ""
    return ", ".join(shown) + more


def setup_lines(facts: dict) -> list[str]:
    """The setup as a few lines for a person: what was read, how, and what will be done with it."""
    data = facts["data"]
    if data.get("texts"):
        lines = [f"data: unlabelled text from {data['texts']}"]
    elif data.get("train_file") or data.get("validation_file"):
        files = [f"{v} ({k.split('_')[0]})" for k, v in data.items() if k.endswith("_file") and v]
        lines = [f"data: your files {' and '.join(files)}{data.get('note', '')}"]
    else:
        lines = [f"data: {data.get('task')} ({data.get('data_dir') or 'hub dataset'})"]
    if facts["task_type"] != "question answering" and not data.get("texts"):
        columns = facts["text_columns"]
        lines.append(
            f"  text columns: {', '.join(columns)}{' (a sentence pair)' if len(columns) == 2 else ''}; "
            f"label column: {facts['label_column']}"
        )
    kind = facts["task_type"]
    if "labels" in facts:
        kind += f", {len(facts['labels'])} classes; label -> id (sorted): "
        kind += _label_line(facts["labels"], facts["sizes"].get("train") is not None)
    lines.append(f"  task type: {kind}")
    sizes = ", ".join(f"{k.replace('_', ' ')} {'n/a' if v is None else v}" for k, v in facts["sizes"].items())
    length = f"; max length {facts['max_length']}" if facts.get("max_length") else ""
    lines.append(f"  sizes: {sizes}; metric: {facts['metric_label']}{length}")
    if facts.get("selection"):
        lines.append(f"  checkpoints: {facts['selection']['described']}")
    schedule = facts.get("schedule")
    if schedule:
        lines.append(
            "  schedule: "
            + ", ".join(
                f"{k.replace('_', ' ')} {v:g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                for k, v in schedule.items()
            )
        )
    return lines


class WallTimeEstimate:
    """Call :meth:`step` after every training step; after ``after`` steps it logs once how long the whole run
    should take at that pace ("about 12 min for 564 steps"), and :attr:`estimate` keeps the JSON-able numbers."""

    def __init__(self, total_steps: int, log, done: int = 0, after: int = 10, extra: str = "") -> None:
        self.total, self.log, self.after, self.extra = total_steps, log, after, extra
        self.done_at_start, self.seen, self.started, self.estimate = done, 0, time.perf_counter(), None

    def step(self) -> None:
        self.seen += 1
        left = self.total - self.done_at_start - self.seen
        if self.seen != self.after or left <= 0:
            return
        per_step = (time.perf_counter() - self.started) / self.seen
        self.estimate = {
            "seconds_per_step": round(per_step, 4),
            "steps": self.total,
            "estimated_minutes_left": round(per_step * left / 60, 1),
        }
        self.log(
            f"time: {per_step:.2f} s per step over the first {self.seen} steps: about "
            f"{_minutes(per_step * left)} for the remaining {left} of {self.total} steps{self.extra}"
        )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def prune_setup(run) -> dict:
    """The setup facts of a :class:`toprune.prune.ToPRun` (data, and its schedule)."""
    cfg = run.cfg
    schedule = {
        "method": cfg.method,
        "target": cfg.target,
        "measured_against": f"the dense model, {cfg.convention}",
        "epochs": cfg.epochs,
        "warmup_epochs": cfg.warmup_epochs,
        "hard_epochs": cfg.hard_epochs,
        "steps": run.total_steps,
        "steps_per_epoch": run.steps_per_epoch,
        "batch_size": cfg.batch_size * run.accelerator.num_processes,
        "lr": cfg.lr,
        "gate_lr": cfg.gate_lr,
        "lambda_lr": cfg.lambda_lr,
        "eval_every": cfg.eval_every,
        "pruning_layers": ",".join(map(str, run.layers)),
        "max_length": cfg.max_length,
    }
    if cfg.max_steps:
        schedule["max_steps"] = cfg.max_steps
    return setup_facts(run.data, schedule)


def teacher_metric(teacher: str | Path | None, on: str = "dev") -> float | None:
    """The dense teacher's metric from its ``toprune_teacher.json`` (written by ``toprune finetune``): on dev, or
    (``on="heldout"``) on the held-out selection slice, which is the same slice for every run of a task."""
    import json

    if not teacher:
        return None
    try:
        record = json.loads((Path(teacher) / "toprune_teacher.json").read_text())
        if on == "dev":
            return float(record["metric"])
        return float(record["selection_metric"]) if (record.get("selection") or {}).get("on") == on else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def finish_run(run, setup: dict, estimate: dict | None) -> dict:
    """The facts a run's summary.json adds to its numbers, and the kept model's tokens-per-layer plot (written
    beside summary.json). The summary's config never names a GLUE task for a run on the user's files."""
    from .plan import PruningPlan
    from .plots import plot_tokens_per_layer

    extras = {
        "setup": setup,
        "time_estimate": estimate,
        "teacher_metric": teacher_metric(run.cfg.teacher),
        "teacher_selection_metric": teacher_metric(run.cfg.teacher, run.data.selection_info.on),
    }
    if run.data.source.get("train_file") and run.data.kind != "qa":
        extras["config"] = {**asdict(run.cfg), "task": None}
    best = run.out / "best"
    if run.best is not None and run.accelerator.is_main_process and best.is_dir():
        plan = PruningPlan.load(best)
        reduction = run.best["flops_reduction_unpadded"]
        path = plot_tokens_per_layer(
            plan,
            run.best_kept,
            run.out / "tokens_per_layer.png",
            f"{run.data.name}: tokens entering each layer\nkept step {run.best['step']}, "
            f"{reduction:.2f}x FLOPs reduction (unpadded) where it was chosen",
        )
        extras["plots"] = {"tokens_per_layer": str(path)}
    return extras
