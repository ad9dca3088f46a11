"""SQuAD v1.1 / v2.0 extractive QA: loading, the article split, window pre-processing and answer post-processing.

* Data in the official JSON layout: a local folder (``dev-v1.1.json``, ``train-v1.1.json``, ``*-v2.0.json``), the
  user's own files in that layout, or the hub (``rajpurkar/squad``, ``rajpurkar/squad_v2``) when online.
* Only the official v1.1 dev set exists locally, so without a train file we train on an article-disjoint split of
  it: the first ``TRAIN_ARTICLES`` (38) articles in file order train, the remaining 10 are held out and evaluated.
  With a train file, the full official dev set is evaluated.
* Pre-processing is the standard one (question + context windows with a stride, offsets, answer token positions,
  no-answer features point at the first token); post-processing takes the n-best start/end pairs inside the
  context only (never the question, special tokens or padding), at most ``max_answer_length`` tokens, and for v2.0
  compares the best span with the null (first-token) score. The metrics are in :mod:`toprune.squad_metrics`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ToPruneError

SQUAD_TASKS = {"squad": "v1.1", "squad_v2": "v2.0"}
TRAIN_ARTICLES = 38


def is_squad(task: str | None) -> bool:
    return (task or "").lower() in SQUAD_TASKS


def read_squad_json(path: str | Path) -> list[dict]:
    """Flatten an official-layout file into examples: id, title, article (index), context, question, answers."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())["data"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ToPruneError(f"{path} is not a SQuAD JSON file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, list):
        raise ToPruneError(f'{path} is not a SQuAD JSON file ("data" is not a list of articles)')
    examples = []
    for article_index, article in enumerate(data):
        for p_index, paragraph in enumerate(_items(article, "paragraphs", path, f"article {article_index + 1}")):
            where = f"article {article_index + 1}, paragraph {p_index + 1}"
            context = _text(paragraph, "context", path, where)
            for q_index, qa in enumerate(_items(paragraph, "qas", path, where)):
                at = f"{where}, question {q_index + 1}"
                answers = _items(qa, "answers", path, at, required=False)
                try:
                    texts = [str(a["text"]) for a in answers]
                    starts = [int(a["answer_start"]) for a in answers]
                except (KeyError, TypeError, ValueError):
                    raise ToPruneError(
                        f'{path} {at}: every answer needs "text" and an integer "answer_start"'
                    ) from None
                examples.append(
                    {
                        "id": str(_text(qa, "id", path, at)),
                        "title": article.get("title", ""),
                        "article": article_index,
                        "context": context,
                        "question": _text(qa, "question", path, at),
                        "answers": {"text": texts, "answer_start": starts},
                        "is_impossible": bool(qa.get("is_impossible", False)),
                    }
                )
    return examples


def _items(parent, key: str, path: Path, where: str, required: bool = True) -> list:
    """A list field of one level of the SQuAD layout, or one line naming the file and where in it."""
    if not isinstance(parent, dict):
        raise ToPruneError(f"{path} {where}: expected a JSON object")
    value = parent.get(key, None if required else [])
    if not isinstance(value, list):
        raise ToPruneError(f'{path} {where}: {"no" if value is None else "bad"} "{key}" list')
    return value


def _text(parent: dict, key: str, path: Path, where: str):
    value = parent.get(key) if isinstance(parent, dict) else None
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ToPruneError(f'{path} {where}: no "{key}"')
    return value


def _find(data_dir, name: str) -> Path | None:
    if data_dir is None:
        return None
    root = Path(data_dir)
    for folder in (root, root / "squad", root.parent / "squad"):
        if (folder / name).is_file():
            return folder / name
    return None


def _from_hub(version: str, split: str) -> list[dict]:
    try:
        from datasets import load_dataset

        ds = load_dataset("rajpurkar/squad" if version == "v1.1" else "rajpurkar/squad_v2", split=split)
    except Exception as exc:  # offline, no such split, ...: one line, with what to do
        raise ToPruneError(
            f"SQuAD {version} {split} not found locally and the hub failed "
            f"({type(exc).__name__}); pass --data-dir with the official JSON files"
        ) from None
    return [dict(row, article=None, is_impossible=not row["answers"]["text"]) for row in ds]


def split_by_article(examples: list[dict], train_articles: int = TRAIN_ARTICLES) -> tuple[list[dict], list[dict]]:
    """Article-disjoint split: articles [0, train_articles) in file order train, the rest are held out."""
    articles = sorted({e["article"] for e in examples})
    if len(articles) <= train_articles:
        raise ToPruneError(f"cannot hold out articles: the file has {len(articles)}, {train_articles} are for training")
    keep = set(articles[:train_articles])
    return [e for e in examples if e["article"] in keep], [e for e in examples if e["article"] not in keep]


def load_squad(task: str, data_dir=None, train_file=None, validation_file=None) -> tuple[list[dict], list[dict], str]:
    """(train examples, evaluation examples, a description of the split that is reported with every number)."""
    train, dev, split = _load(task, data_dir, train_file, validation_file)
    if SQUAD_TASKS[task.lower()] == "v1.1" and any(not e["answers"]["text"] for e in train + dev):
        raise ToPruneError("these files have unanswerable questions (SQuAD 2.0 style): use --task squad_v2")
    return train, dev, split


def _load(task: str, data_dir, train_file, validation_file) -> tuple[list[dict], list[dict], str]:
    version = SQUAD_TASKS[task.lower()]
    if validation_file and not train_file:  # evaluation only, on the user's file
        return [], read_squad_json(validation_file), f"evaluated on {Path(validation_file).name}"
    if train_file:
        train = read_squad_json(train_file)
        dev_path = validation_file or _find(data_dir, f"dev-{version}.json")
        dev = read_squad_json(dev_path) if dev_path else _from_hub(version, "validation")
        evaluated = Path(dev_path).name if dev_path else "hub validation"
        return train, dev, f"train {Path(train_file).name}, evaluated on {evaluated}"
    train_path, dev_path = _find(data_dir, f"train-{version}.json"), _find(data_dir, f"dev-{version}.json")
    if train_path and dev_path:
        return read_squad_json(train_path), read_squad_json(dev_path), "official train / official dev"
    if dev_path:
        train, held_out = split_by_article(read_squad_json(dev_path))
        return (
            train,
            held_out,
            (
                f"article split of {dev_path.name}: first {TRAIN_ARTICLES} articles train "
                f"({len(train)} questions), remaining articles held out ({len(held_out)} questions)"
            ),
        )
    if data_dir is not None and not Path(data_dir).exists():
        raise ToPruneError(f"--data-dir {data_dir} does not exist")
    return _from_hub(version, "train"), _from_hub(version, "validation"), "official train / official dev (hub)"


def _windows(examples: list[dict], tokenizer, max_length: int, stride: int):
    questions = [e["question"].lstrip() for e in examples]  # leading spaces waste window room (HF run_qa)
    try:
        return tokenizer(
            questions,
            [e["context"] for e in examples],
            truncation="only_second",
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
    except Exception as exc:  # e.g. a question longer than the window
        raise ToPruneError(
            f"cannot cut SQuAD windows of {max_length} tokens with stride {stride}: {str(exc).splitlines()[0]}"
        ) from None


def train_features(examples: list[dict], tokenizer, max_length: int = 384, stride: int = 128) -> dict:
    """Model inputs plus start/end token positions; windows without the answer (and unanswerable questions)
    point both at the first token, as in the standard recipe."""
    enc = _windows(examples, tokenizer, max_length, stride)
    starts, ends = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        answers = examples[enc["overflow_to_sample_mapping"][i]]["answers"]
        sequence_ids = enc.sequence_ids(i)
        context = [j for j, s in enumerate(sequence_ids) if s == 1]
        start = end = 0
        if answers["answer_start"] and context:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            first, last = context[0], context[-1]
            if offsets[first][0] <= start_char and offsets[last][1] >= end_char:
                start = next(j for j in context if offsets[j][1] > start_char)
                end = max(j for j in context if offsets[j][0] < end_char)
        starts.append(start)
        ends.append(end)
    inputs = {k: enc[k] for k in enc.keys() if k not in ("offset_mapping", "overflow_to_sample_mapping")}
    return inputs | {"start_positions": starts, "end_positions": ends}


@dataclass
class EvalFeatures:
    inputs: dict  # model inputs, one row per window
    example_index: list[int]  # window -> example
    offsets: list[list[tuple[int, int] | None]]  # window -> per token character span, None outside the context


def eval_features(examples: list[dict], tokenizer, max_length: int = 384, stride: int = 128) -> EvalFeatures:
    enc = _windows(examples, tokenizer, max_length, stride)
    offsets = [
        [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], enc.sequence_ids(i))]
        for i in range(len(enc["input_ids"]))
    ]
    inputs = {k: enc[k] for k in enc.keys() if k not in ("offset_mapping", "overflow_to_sample_mapping")}
    return EvalFeatures(inputs, list(enc["overflow_to_sample_mapping"]), offsets)


@dataclass
class Prediction:
    text: str
    null_odds: float  # null score - best span score (v2.0: answer "" when above the threshold)


def postprocess(
    examples: list[dict],
    features: EvalFeatures,
    start_logits: list[np.ndarray],
    end_logits: list[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
    allowed: list[np.ndarray] | None = None,
) -> list[Prediction]:
    """Best answer span of every example over its windows (context tokens only; ``allowed``: optional extra
    per-window token masks, e.g. to exclude pruned positions from answer boundaries)."""
    by_example: dict[int, list[int]] = {}
    for w, e in enumerate(features.example_index):
        by_example.setdefault(e, []).append(w)
    predictions = []
    for e, example in enumerate(examples):
        best, null = (float("-inf"), ""), float("inf")
        for w in by_example.get(e, []):
            s, t, offsets = start_logits[w], end_logits[w], features.offsets[w]
            null = min(null, float(s[0] + t[0]))  # the first token is the no-answer position
            ok = np.array([o is not None for o in offsets[: len(s)]])
            if allowed is not None:
                ok &= allowed[w][: len(s)]
            for i in np.argsort(s)[::-1][:n_best]:
                for j in np.argsort(t)[::-1][:n_best]:
                    if not (ok[i] and ok[j]) or j < i or j - i + 1 > max_answer_length:
                        continue
                    score = float(s[i] + t[j])
                    if score > best[0]:
                        best = (score, example["context"][offsets[i][0] : offsets[j][1]])
        predictions.append(Prediction(best[1], null - best[0]))
    return predictions


def final_answers(examples: list[dict], predictions: list[Prediction], version: str, threshold: float = 0.0):
    """{id: answer text} and {id: null odds}; v2.0 answers "" when the null odds exceed ``threshold``."""
    answers = {}
    for example, p in zip(examples, predictions):
        answers[example["id"]] = "" if version == "v2.0" and p.null_odds > threshold else p.text
    return answers, {example["id"]: p.null_odds for example, p in zip(examples, predictions)}
