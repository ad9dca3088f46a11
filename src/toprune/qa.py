"""Extractive question answering as a toprune task: data, span decoding, evaluation and distillation (METHOD.md §6).

How pruned positions are treated: the runtime scatters every token back after the last layer, so the QA head
sees a full-length sequence; a pruned token carries its hidden state from the layer where it was dropped (its
"stale" state). Answer boundaries are taken among *context* tokens only (never the question, special tokens or
padding). Evaluation reports both policies for pruned positions: stale states allowed as boundaries (``f1``,
``exact``, the default) and pruned positions excluded (``f1_excluding_pruned``, ``exact_excluding_pruned``).
Question tokens are prunable like any other token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ToPruneError
from .validate import DEFAULT_SEED


@dataclass
class QAInfo:
    """What QA evaluation needs beyond the tokenised windows."""

    version: str  # "v1.1" or "v2.0"
    examples: list  # the evaluated examples (with gold answers)
    features: object  # squad.EvalFeatures of the evaluation windows
    split: str  # how train and evaluation data were chosen (reported with every number)
    n_best: int = 20
    max_answer_length: int = 30


def prepare_squad(
    tokenizer,
    task: str,
    data_dir,
    max_length: int = 384,
    stride: int | None = None,
    max_train_samples: int | None = None,
    seed: int = DEFAULT_SEED,
    dev_only: bool = False,
    train_file=None,
    validation_file=None,
    select_on: str = "heldout",
):
    """A :class:`toprune.train.TaskData` of kind "qa": train windows with answer positions, evaluation windows.
    ``stride`` (tokens shared by consecutive windows) defaults to a third of the window: 128 for 384.
    ``select_on="heldout"``: whole training paragraphs are held out as the selection set (``selection``, decoded with
    ``selection_qa``), taken before any subsetting; ``"dev"``: checkpoints are chosen on dev (the paper's way)."""
    import random

    from datasets import Dataset

    from .selection import Selection, check_select_on, split_heldout_paragraphs
    from .squad import SQUAD_TASKS, eval_features, load_squad, train_features
    from .train import TaskData

    check_select_on(select_on)
    train, dev, split = load_squad(task, data_dir, train_file, validation_file)
    stride = max_length // 3 if stride is None else stride
    version = SQUAD_TASKS[task.lower()]
    features = eval_features(dev, tokenizer, max_length, stride)
    train_ds = selection = selection_qa = info = None
    if not dev_only and not train:
        raise ToPruneError("--validation-file alone only evaluates; training needs --train-file too")
    if not dev_only:
        if select_on == "heldout":
            train, held = split_heldout_paragraphs(train)
            held_features = eval_features(held, tokenizer, max_length, stride)
            selection = Dataset.from_dict(held_features.inputs)
            selection_qa = QAInfo(version, held, held_features, f"{split}; selection: held-out training paragraphs")
            info = Selection(
                "heldout", len(held), len(train), paragraphs=len({(e["article"], e["context"]) for e in held})
            )
        else:
            info = Selection("dev", len(dev), len(train))
        if max_train_samples and max_train_samples < len(train):
            train = random.Random(seed).sample(train, max_train_samples)
        train_ds = Dataset.from_dict(train_features(train, tokenizer, max_length, stride))
    dev_raw = Dataset.from_dict({"text_a": [e["question"] for e in dev], "text_b": [e["context"] for e in dev]})
    qa = QAInfo(version, dev, features, split)
    dev_ds = Dataset.from_dict(features.inputs)
    data = TaskData(task.lower(), "f1", None, train_ds, dev_ds, dev_raw, kind="qa", qa=qa, selection=selection)
    data.selection_info, data.selection_qa = info, selection_qa
    return data


def survivors(state, batch_shape) -> torch.Tensor | None:
    """(B, N) bool: tokens that reached the last layer in the last recorded forward (None if nothing pruned)."""
    if state is None or not state.plan.kept_bins or not state.last.positions:
        return None
    final = state.last.positions[-1].cpu()
    alive = torch.zeros(batch_shape, dtype=torch.bool)
    rows = torch.arange(final.shape[0]).unsqueeze(1).expand_as(final)
    keep = final >= 0
    alive[rows[keep], final[keep]] = True
    return alive


def qa_metrics(info: QAInfo, starts: list[np.ndarray], ends: list[np.ndarray], alive: list[np.ndarray] | None):
    """EM/F1 (and v2.0 extras) from per-window logits; with ``alive``, also with pruned positions excluded."""
    from .squad import final_answers, postprocess
    from .squad_metrics import squad_metrics

    out = {}
    for suffix, allowed in [("", None)] + ([("_excluding_pruned", alive)] if alive is not None else []):
        predictions = postprocess(
            info.examples, info.features, starts, ends, info.n_best, info.max_answer_length, allowed
        )
        answers, null_odds = final_answers(info.examples, predictions, info.version)
        metrics = squad_metrics(info.examples, answers, info.version, null_odds)
        out.update({f"{k}{suffix}": v for k, v in metrics.items() if k != "total" or not suffix})
    out["metric"] = out["f1"]
    return out


def qa_loss(logits: torch.Tensor, targets: dict) -> torch.Tensor:
    """Fine-tuning loss: cross-entropy of the start and of the end position, averaged (as HF computes it)."""
    n = logits.shape[1]
    start = targets["start_positions"].clamp(0, n - 1)
    end = targets["end_positions"].clamp(0, n - 1)
    return (F.cross_entropy(logits[..., 0], start) + F.cross_entropy(logits[..., 1], end)) / 2


def qa_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float):
    """KD of the start and the end distributions over the real tokens (padding excluded), T^2-scaled KL."""
    t = temperature
    fill = -1e4  # padding leaves both softmaxes (finite: no inf - inf at any temperature)
    s = student.masked_fill(~mask.bool().unsqueeze(-1), fill).transpose(1, 2).flatten(0, 1)  # (B*2, N)
    q = teacher.masked_fill(~mask.bool().unsqueeze(-1), fill).transpose(1, 2).flatten(0, 1)
    return t * t * F.kl_div(F.log_softmax(s / t, -1), F.log_softmax(q / t, -1), log_target=True, reduction="batchmean")


def answer_region(batch: dict, valid: torch.Tensor) -> torch.Tensor:
    """Where an answer may lie: the second segment (the context) of BERT-style pairs, else every token but CLS."""
    segments = batch.get("token_type_ids")
    if segments is not None and bool((segments == 1).any()):
        return valid & (segments == 1)
    region = valid.clone()
    region[:, 0] = False
    return region
