"""Extractive question answering: span decoding shared by evaluation and serving (METHOD.md §6 for the KD)."""

from __future__ import annotations

import numpy as np


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, allowed: np.ndarray, max_answer_length: int):
    """The (start, end, score) token span with the largest start + end logit, both ends inside ``allowed``
    (context tokens only: never the question, special tokens or padding), end >= start, at most
    ``max_answer_length`` tokens; None if no token is allowed."""
    idx = np.flatnonzero(allowed)
    if idx.size == 0:
        return None
    scores = start_logits[idx][:, None] + end_logits[idx][None, :]
    length = idx[None, :] - idx[:, None]
    scores = np.where((length >= 0) & (length < max_answer_length), scores, -np.inf)
    s, e = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(idx[s]), int(idx[e]), float(scores[s, e])
