"""Shared training pieces: task data -> tokenised loaders, evaluation (metric + measured FLOPs), teacher fine-tuning."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from .data import GLUE_TASKS, glue_task, load_glue_split
from .errors import ToPruneError
from .flops import EncoderDims, batch_flops
from .metrics import glue_metrics
from .pretrained import resolve_model
from .qa import qa_loss, qa_metrics, survivors
from .runtime import pruning_state
from .selection import Selection, check_select_on, split_heldout
from .validate import DEFAULT_SEED, check_label_names, check_max_length, check_same_task, check_seed, check_trained


@dataclass
class TaskData:
    name: str
    metric: str  # headline metric name
    labels: tuple[str, ...] | None  # None: regression
    train: object  # tokenised datasets.Dataset (None when only dev was asked for)
    dev: object
    dev_raw: object = None  # the untokenised dev split (texts for latency benchmarks)
    kind: str = "classification"  # or "qa" (extractive question answering)
    qa: object = None  # qa.QAInfo: examples and windows for QA post-processing
    selection: object = None  # tokenised held-out slice of the training data (None: selection on dev)
    selection_info: Selection | None = None
    # where the data came from, for the printed setup and toprune_task.json: task/data_dir (GLUE, SQuAD) or
    # train_file/validation_file (the user's), and text_columns/label_column
    source: dict = field(default_factory=dict)
    embedding: object = None  # embedding.Pooling of kind "embedding" (pooled sentence embeddings, no labels)
    selection_qa: object = None  # qa.QAInfo of the held-out QA paragraphs (QA decodes a set with its own examples)

    @property
    def select_set(self):
        """The examples checkpoints are chosen on: the held-out training slice, or dev when none was held out."""
        return self.dev if self.selection is None else self.selection

    def on_selection(self) -> "TaskData":
        """This task as :func:`evaluate` must see it on ``select_set``: QA decodes the slice's own questions."""
        if self.kind != "qa" or self.selection is None:
            return self
        return replace(self, qa=self.selection_qa)

    @property
    def num_labels(self) -> int:
        if self.kind == "qa":
            return 2  # start and end logits
        return 1 if self.labels is None else len(self.labels)

    @property
    def auto_class(self) -> str:
        if self.kind == "embedding":
            return "AutoModel"
        return "AutoModelForQuestionAnswering" if self.kind == "qa" else "AutoModelForSequenceClassification"


TARGETS = ("labels", "start_positions", "end_positions", "teacher_embedding")
KNOWN_TASKS = set(GLUE_TASKS)  # tasks whose names say what a model was trained on (SQuAD v1.1/v2.0 models may cross)


def is_qa_model(model) -> bool:
    return any(a.endswith("ForQuestionAnswering") for a in model.config.architectures or []) or type(
        model
    ).__name__.endswith("ForQuestionAnswering")


def check_qa_head(model, path, task: "TaskData") -> None:
    """A one-line error for a QA model on a classification task, or the reverse."""
    if is_qa_model(model) != (task.kind == "qa"):
        raise ToPruneError(
            f"{path} is {'a QA' if is_qa_model(model) else 'not a QA'} model but task {task.name} "
            f"is {'' if task.kind == 'qa' else 'not '}question answering"
        )


def check_head(model, path, task: "TaskData", max_length: int | None = None) -> None:
    """One-line errors for a model whose head does not fit the task (QA vs classification, an untrained head, label
    count, label names) or whose positions are fewer than ``max_length``."""
    check_qa_head(model, path, task)
    check_trained(model, str(path))
    if max_length is not None:
        check_max_length(model.config, max_length, str(path))
    if model.config.num_labels != task.num_labels:
        raise ToPruneError(
            f"{path} predicts {model.config.num_labels} labels but task {task.name} has "
            f"{task.num_labels}: evaluate it on the task it was trained for"
        )
    if task.kind != "qa":
        check_label_names(model.config, str(path), task.labels, task.name)
    check_same_task(resolve_model(path), str(path), task.name, KNOWN_TASKS)


def split_targets(batch: dict) -> tuple[dict, dict]:
    """(model inputs, training targets) of a collated batch."""
    return {k: v for k, v in batch.items() if k not in TARGETS}, {k: v for k, v in batch.items() if k in TARGETS}


def head_logits(output) -> torch.Tensor:
    """Classification logits (B, C), or QA start/end logits stacked as (B, N, 2)."""
    if "logits" in output:
        return output.logits
    return torch.stack([output.start_logits, output.end_logits], dim=-1)


def supervised_loss(logits: torch.Tensor, targets: dict, task: "TaskData") -> torch.Tensor:
    if task.kind == "qa":
        return qa_loss(logits, targets)
    return task_loss(logits, targets["labels"], task.labels is None)


def seed_everything(seed: int) -> None:
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tokenise(dataset, tokenizer, labels, max_length: int):
    label_id = None if labels is None else {name: i for i, name in enumerate(labels)}

    def encode(rows):
        pairs = [rows["text_a"]] + ([rows["text_b"]] if "text_b" in rows else [])
        out = tokenizer(*pairs, truncation=True, max_length=max_length)
        out["labels"] = rows["label"] if label_id is None else [label_id[str(x)] for x in rows["label"]]
        return out

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenising")


def _task_data(
    name, metric, labels, train, dev, tokenizer, max_length, max_train_samples, seed, dev_only, select_on="heldout"
):
    """Hold out the selection slice, subset (seeded) and tokenise the splits of any task, GLUE or the user's own.
    The slice is taken before subsetting, so it does not move with ``max_train_samples`` or ``seed``."""
    check_select_on(select_on)
    selection, info = None, None
    if dev_only:
        train = None
    else:
        if select_on == "heldout":
            train, selection = split_heldout(train)
            info = Selection("heldout", len(selection), len(train))
        else:
            info = Selection("dev", len(dev), len(train))
        if max_train_samples and max_train_samples < len(train):
            train = train.shuffle(seed=seed).select(range(max_train_samples))
        train = tokenise(train, tokenizer, labels, max_length)
        selection = None if selection is None else tokenise(selection, tokenizer, labels, max_length)
    return TaskData(
        name,
        metric,
        labels,
        train,
        tokenise(dev, tokenizer, labels, max_length),
        dev,
        selection=selection,
        selection_info=info,
    )


def prepare_glue(
    tokenizer,
    task_name: str,
    data_dir,
    max_length: int = 128,
    max_train_samples: int | None = None,
    seed: int = DEFAULT_SEED,
    dev_only: bool = False,
    select_on: str = "heldout",
) -> TaskData:
    task = glue_task(task_name)
    train = None if dev_only else load_glue_split(data_dir, task.name, "train")
    dev = load_glue_split(data_dir, task.name, "dev")
    data = _task_data(
        task.name,
        task.metric,
        task.labels,
        train,
        dev,
        tokenizer,
        max_length,
        max_train_samples,
        seed,
        dev_only,
        select_on,
    )
    data.source = {
        "task": task.name,
        "data_dir": None if data_dir is None else str(data_dir),
        "text_columns": list(task.text_columns),
        "label_column": task.label_column,
    }
    return data


def prepare_user(
    tokenizer,
    train_file,
    validation_file,
    text_columns=None,
    label_column=None,
    max_length: int = 128,
    max_train_samples: int | None = None,
    seed: int = DEFAULT_SEED,
    dev_only: bool = False,
    select_on: str = "heldout",
    task_type: str | None = None,
) -> TaskData:
    """The user's own CSV/TSV/JSON Lines files (see :mod:`toprune.userdata`); metric: accuracy or Pearson.
    ``task_type``: "classification" or "regression" (default: inferred from the training labels)."""
    from .userdata import load_user_data

    if not validation_file:
        raise ToPruneError("--train-file needs --validation-file too (the dev set that is evaluated)")
    if isinstance(text_columns, str):
        text_columns = tuple(c.strip() for c in text_columns.split(",") if c.strip())
    train, dev, info = load_user_data(train_file, validation_file, text_columns, label_column, task_type=task_type)
    metric = "pearson" if info.is_regression else "accuracy"
    # named after the user's file (progress bars, messages), never a GLUE task
    data = _task_data(
        Path(train_file).name,
        metric,
        info.labels,
        train,
        dev,
        tokenizer,
        max_length,
        max_train_samples,
        seed,
        dev_only,
        select_on,
    )
    data.source = {
        "train_file": str(train_file),
        "validation_file": str(validation_file),
        "text_columns": list(info.text_columns),
        "label_column": info.label_column,
    }
    return data


def prepare_data(
    tokenizer,
    task: str | None,
    data_dir,
    max_length: int = 128,
    max_train_samples: int | None = None,
    seed: int = DEFAULT_SEED,
    dev_only: bool = False,
    train_file=None,
    validation_file=None,
    text_columns=None,
    label_column=None,
    select_on: str = "heldout",
    task_type: str | None = None,
) -> TaskData:
    """SQuAD (``squad``, ``squad_v2``: local JSON, the user's files in that layout, or the hub), the user's own
    classification files when ``train_file`` is given, else the GLUE task."""
    from .squad import is_squad

    if (task or "").lower() == "embedding":  # unlabelled text; the pooling is set from the model by the caller
        from .embedding import prepare_embedding

        if not train_file:
            raise ToPruneError("--task embedding needs --train-file: a .txt/CSV/JSON Lines file or glue:TASK")
        return prepare_embedding(
            tokenizer, str(train_file), data_dir, max_length, max_train_samples, seed, column=text_columns
        )
    if is_squad(task):
        from .qa import prepare_squad

        data = prepare_squad(
            tokenizer,
            task,
            data_dir,
            max_length,
            max_train_samples=max_train_samples,
            seed=seed,
            dev_only=dev_only,
            train_file=train_file,
            validation_file=validation_file,
            select_on=select_on,
        )
        data.source = {
            "task": data.name,
            "data_dir": None if data_dir is None else str(data_dir),
            "train_file": train_file,
            "validation_file": validation_file,
        }
        return data
    if validation_file and not train_file:
        raise ToPruneError("--validation-file needs --train-file (labels are learned from the training file)")
    if train_file:
        return prepare_user(
            tokenizer,
            train_file,
            validation_file,
            text_columns,
            label_column,
            max_length,
            max_train_samples,
            seed,
            dev_only,
            select_on,
            task_type,
        )
    if task_type is not None:
        raise ToPruneError("--task-type is for your own files (--train-file); GLUE and SQuAD tasks have theirs")
    return prepare_glue(tokenizer, task, data_dir, max_length, max_train_samples, seed, dev_only, select_on)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_loader(
    dataset, tokenizer, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0, group_by_length: bool = False
) -> DataLoader:
    """Dynamic padding; the shuffle order depends only on (seed, epoch), so a resumed run sees the same batches.

    ``group_by_length`` (with ``shuffle``): batches of similar lengths, as HF's ``group_by_length``: shuffle, sort
    chunks of 50 batches by length, shuffle the batches. For SQuAD windows (tens to 384 tokens) it more than halves
    the padded tokens of a step.
    """
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    collate = DataCollatorWithPadding(tokenizer)
    if not (shuffle and group_by_length):
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate)
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = 50 * batch_size
    order = [i for c in range(0, len(order), chunk) for i in sorted(order[c : c + chunk], key=lengths.__getitem__)]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate)


def predictions_of(logits: torch.Tensor, regression: bool) -> torch.Tensor:
    return logits.squeeze(-1) if regression else logits.argmax(-1)


@torch.no_grad()
def evaluate(
    model, loader, task: TaskData, padded_length: int = 128, progress: bool = False, return_kept: bool = False
) -> dict:
    """Dev metrics (0-100) and, for a pruned model, the FLOPs of its inference path on these very inputs."""
    model.eval()
    state = pruning_state(model)
    if state is not None:
        state.record, soft = True, state.soft_masks
        state.soft_masks = None
    dims = EncoderDims.from_config(model.config)
    preds, golds, flops, kept, alive = [], [], None, [], []
    device = next(model.parameters()).device
    for batch in tqdm(loader, desc="evaluating", leave=False, disable=not progress):
        inputs, targets = split_targets({k: v.to(device) for k, v in batch.items()})
        if task.kind == "embedding":  # cosine to the dense teacher's embedding (no labels)
            from .embedding import agreement

            preds.append(agreement(model, inputs, targets, task.embedding, state))
        elif task.kind == "qa":  # per window, unpadded: (n, 2) start/end logits
            logits = head_logits(model(**inputs)).float().cpu()
            lengths = inputs["attention_mask"].sum(dim=1).tolist()
            preds += [logits[b, :n] for b, n in enumerate(lengths)]
            survived = survivors(state, tuple(inputs["input_ids"].shape))
            if survived is not None:
                alive += [survived[b, :n].numpy() for b, n in enumerate(lengths)]
        else:
            logits = head_logits(model(**inputs)).float().cpu()
            preds.append(predictions_of(logits, task.labels is None).float())
            golds.append(targets["labels"].float().cpu())
        if state is not None:
            counts = state.last.attn_counts.cpu()
            part = batch_flops(dims, counts, padded_length)
            flops = part if flops is None else flops + part
            kept.append(counts.float() / counts[:, :1].float())
    if state is not None:
        state.record, state.soft_masks = False, soft
    if task.kind == "embedding":
        cosines = torch.cat(preds)
        out = {"teacher_cosine": 100 * float(cosines.mean()), "teacher_cosine_min": 100 * float(cosines.min())}
        out["metric"] = out["teacher_cosine"]
    elif task.kind == "qa":
        out = qa_metrics(task.qa, [p[:, 0].numpy() for p in preds], [p[:, 1].numpy() for p in preds], alive or None)
    else:
        out = glue_metrics(task.metric, torch.cat(preds).numpy(), torch.cat(golds).numpy())
        out["metric"] = out[task.metric]
    if flops is not None:
        out["flops_reduction_unpadded"] = flops.reduction_unpadded
        out["flops_reduction_padded"] = flops.reduction_padded
        fractions = torch.cat(kept)  # (examples, layers): share of each example's tokens entering each layer
        out["kept_fraction_per_layer"] = [round(float(x), 4) for x in fractions.mean(0)]
        if return_kept:
            out["kept_fractions"] = fractions
    return out


def task_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    if regression:
        return torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float())
    return torch.nn.functional.cross_entropy(logits, labels)
