"""Checks made once, where a model folder is opened or a run starts: each failure is one line naming what is wrong.

A model folder must carry the tokenizer it was trained with (without one, ``AutoTokenizer`` builds a vocabulary of
special tokens only and every word becomes ``[UNK]``: results are silently meaningless); a model's label names (and
the GLUE task it was trained on) must be the task's; a model used as trained must have no newly initialised
weights; training stops at the first non-finite loss.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from .errors import ToPruneError

DEFAULT_SEED = 57  # every seeded default (config, commands, data subsets) is this one

# any of these makes a folder's tokenizer real (fast JSON, WordPiece, BPE, SentencePiece)
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "spm.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
_GENERIC_LABEL = re.compile(r"LABEL_\d+")
MAX_SEED = 2**32 - 1  # numpy's seed range


def check_tokenizer_files(folder: str | Path, name: str) -> None:
    folder = Path(folder)
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ToPruneError(
            f"{name} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...): save the "
            f"tokenizer with the model (tokenizer.save_pretrained) or copy it from the base model"
        )


def check_tokenizer_fits(tokenizer, config, name: str) -> None:
    """The tokenizer's ids must index the model's embeddings, and the padding id must agree; a tokenizer of a
    different model (or the special-tokens-only one) fails here."""
    vocab = getattr(config, "vocab_size", None)
    size = len(tokenizer)
    if vocab and (size > vocab or size < vocab // 2):
        raise ToPruneError(
            f"{name}: the tokenizer has {size} tokens but the model's embeddings {vocab}: the folder "
            f"holds another model's tokenizer"
        )
    pad = getattr(config, "pad_token_id", None)
    if pad is not None and tokenizer.pad_token_id is not None and pad != tokenizer.pad_token_id and vocab:
        raise ToPruneError(
            f"{name}: the tokenizer pads with id {tokenizer.pad_token_id} but the model with {pad}: "
            f"the folder holds another model's tokenizer"
        )


def is_generic(names: list[str]) -> bool:
    """A fresh head's LABEL_0, LABEL_1, ... say nothing about the task."""
    return all(_GENERIC_LABEL.fullmatch(str(n)) for n in names)


def check_label_names(config, name: str, labels, task_name: str) -> None:
    """A classifier's ``id2label`` must be the task's labels in the same order (same count is not enough: an SST-2
    model on RTE, or classes in another order, would be scored silently wrong)."""
    id2label = getattr(config, "id2label", None) or {}
    if labels is None or len(id2label) != len(labels):
        return  # regression, or a count mismatch (reported by the head check)
    names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(len(labels))]
    if is_generic(names) or names == [str(x) for x in labels]:
        return
    raise ToPruneError(
        f"{name} was trained for labels ({', '.join(names)}) but task {task_name} has "
        f"({', '.join(map(str, labels))}): use the model of this task"
    )


def check_finite_loss(loss: float, step: int, hint: str) -> None:
    if not math.isfinite(loss):
        raise ToPruneError(f"training diverged at step {step} (loss {loss}): {hint}")


def check_finite_weights(model, what: str, hint: str) -> None:
    import torch

    for pname, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise ToPruneError(f"training diverged: {what} has non-finite weights ({pname}): {hint}")


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ToPruneError(f"--seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    return seed


def check_count(value, name: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ToPruneError(f"{name} must be a positive finite number, got {value!r}")


def check_trained(model, name: str) -> None:
    """A model whose task head was newly initialised at loading (a base model: ``minilm``, a hub encoder) predicts
    noise; its metric, its distillation targets and its export would be silently meaningless."""
    new = getattr(model, "toprune_new_weights", None)
    if new:
        more = f" and {len(new) - 1} more" if len(new) > 1 else ""
        raise ToPruneError(
            f"{name} is not trained for a task ({new[0]}{more} newly initialised at loading): "
            f"fine-tune it on the task first (toprune finetune)"
        )


def check_encoder_complete(model, name: str) -> None:
    """Fine-tuning may start from a fresh head, not from an encoder with missing weights (a partial or foreign
    checkpoint): those would train from random values without a word. The pooler is a head in all but name."""
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    new = [k for k in getattr(model, "toprune_new_weights", []) if k.startswith(prefix) and ".pooler." not in k]
    if new:
        more = f" and {len(new) - 1} more" if len(new) > 1 else ""
        raise ToPruneError(f"{name} lacks encoder weights ({new[0]}{more}); is it a model of this architecture?")


def usable_positions(config) -> int | None:
    """Tokens one input may have: the position table, less RoBERTa's padding offset."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= (getattr(config, "pad_token_id", 1) or 1) + 1
    return positions


def check_max_length(config, max_length: int, name: str) -> None:
    positions = usable_positions(config)
    if positions and max_length > positions:
        raise ToPruneError(f"--max-length {max_length} is beyond the {positions} positions of {name}")


def recorded_task(folder) -> str | None:
    """The task a toprune model was trained on: ``toprune_teacher.json`` (finetune) or the plan's meta (prune)."""
    import json

    for name, key in (("toprune_teacher.json", None), ("toprune_plan.json", "meta")):
        path = Path(folder) / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                task = (data.get(key) or {}).get("task") if key else data.get("task")
            except (OSError, ValueError, AttributeError):
                continue  # the plan loader reports a damaged plan; a damaged summary says nothing
            if isinstance(task, str):
                return task
    return None


def check_same_task(folder, name: str, task_name: str, known: set[str]) -> None:
    """A GLUE/SQuAD model on another of them is refused even when the label names agree (SST-2 and MRPC are both
    0/1); a model of the user's own data ("custom") is judged by its label names only."""
    trained = recorded_task(folder) if Path(folder).is_dir() else None
    if trained in known and task_name in known and trained != task_name:
        raise ToPruneError(f"{name} was trained on {trained}, not {task_name}: use the model of this task")


def training_steps(examples: int, batch_size: int, epochs: float) -> tuple[int, int]:
    """(steps an epoch, steps in all) of a run; one line naming --epochs when that is no step at all (a run of none
    trains nothing, selects nothing and would end in a misleading error)."""
    per_epoch = -(-examples // batch_size)
    total = int(per_epoch * epochs)
    if total < 1:
        raise ToPruneError(
            f"--epochs {epochs:g} is no training step: {examples} training examples make {per_epoch} steps of "
            f"batch {batch_size} an epoch; raise --epochs"
        )
    return per_epoch, total
