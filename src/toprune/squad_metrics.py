"""Exact match and F1 as the official SQuAD evaluation scripts define them (v1.1 and v2.0).

No maintained library computes the v2.0 figures offline (``evaluate`` downloads its scripts; torchmetrics has
v1.1 only), so the official definitions are written here and tested on hand-checked cases (and against
torchmetrics' v1.1 metric where it is installed):
* answers are normalised: lower case, punctuation and the articles a/an/the removed, whitespace collapsed;
* EM: the normalised strings are equal; F1: token overlap (multiset) of the normalised strings; both are the
  maximum over the gold answers;
* v1.1 (``evaluate-v1.1.py``): an empty normalised string has F1 0 against a non-empty gold;
* v2.0 (``evaluate-v2.0.py``): an unanswerable question's gold is [""], and an empty prediction or gold scores 1
  only when both are empty; HasAns / NoAns splits; the best no-answer threshold from the null odds.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, version: str = "v1.1") -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version == "v2.0" and (not pred or not ref):
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _golds(example: dict, version: str) -> list[str]:
    golds = list(example["answers"]["text"])
    if version == "v2.0":
        golds = [g for g in golds if normalize_answer(g)] or [""]
    return golds


def _best_threshold(answers: dict, raw: dict, null_odds: dict, has_answer: dict) -> tuple[float, float]:
    """The official ``find_best_thresh``: answer "" when the null odds exceed the threshold; sweep thresholds."""
    score = best = sum(1 for qid in raw if not has_answer[qid])
    threshold = 0.0
    for qid in sorted(null_odds, key=null_odds.get):
        if qid not in raw:
            continue
        score += raw[qid] if has_answer[qid] else (-1 if answers[qid] else 0)
        if score > best:
            best, threshold = score, null_odds[qid]
    return 100.0 * best / len(raw), threshold


def squad_metrics(
    examples: list[dict], answers: dict[str, str], version: str = "v1.1", null_odds: dict[str, float] | None = None
) -> dict[str, float]:
    """EM and F1 on the 0-100 scale over ``examples`` (official gold answers) for predicted ``answers`` by id."""
    em_raw, f1_raw, has_answer = {}, {}, {}
    for example in examples:
        qid, golds = example["id"], _golds(example, version)
        prediction = answers.get(qid, "")
        em_raw[qid] = max(exact(prediction, g) for g in golds)
        f1_raw[qid] = max(f1(prediction, g, version) for g in golds)
        has_answer[qid] = bool(example["answers"]["text"])  # the official qid_to_has_ans
    n = max(1, len(examples))
    out = {"exact": 100.0 * sum(em_raw.values()) / n, "f1": 100.0 * sum(f1_raw.values()) / n, "total": len(examples)}
    if version == "v2.0":
        for name, keep in (("HasAns", True), ("NoAns", False)):
            ids = [q for q, h in has_answer.items() if h == keep]
            if ids:
                out[f"{name}_exact"] = 100.0 * sum(em_raw[q] for q in ids) / len(ids)
                out[f"{name}_f1"] = 100.0 * sum(f1_raw[q] for q in ids) / len(ids)
                out[f"{name}_total"] = len(ids)
        if null_odds is not None:
            out["best_exact"], out["best_exact_thresh"] = _best_threshold(answers, em_raw, null_odds, has_answer)
            out["best_f1"], out["best_f1_thresh"] = _best_threshold(answers, f1_raw, null_odds, has_answer)
    return out
