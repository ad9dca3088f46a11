"""Label-free judging of an embedding model on real data (labels are used here only, never in training):

* STS-B dev: Spearman correlation (x100) between the cosine similarity of the two sentences' embeddings and the
  gold score, the standard sentence-embedding score;
* SQuAD v1.1 dev passage retrieval: the questions of the held-out articles (those after the first
  ``TRAIN_ARTICLES``, as in toprune's SQuAD split) against every paragraph of the file, ranked by cosine;
  recall@1/5/10 and MRR (x100). :func:`squad_training_texts` gives the other articles' text, for training.

Each also reports the FLOPs reduction (unpadded) the model achieved on the texts it encoded.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import label_ranking_average_precision_score, top_k_accuracy_score

from .embedding import Pooling, embed
from .flops import EncoderDims, batch_flops
from .runtime import pruning_state


@torch.no_grad()
def encode_with_flops(
    model, tokenizer, texts: list[str], pooling: Pooling, batch_size: int = 64, max_length: int = 256
) -> tuple[np.ndarray, float | None]:
    """(len(texts), d) float32 embeddings, and the unpadded FLOPs reduction over these texts (None when dense).
    Batches are sorted by length (less padding) and the rows returned in the input order."""
    model.eval()
    device = next(model.parameters()).device
    state = pruning_state(model)
    dims = EncoderDims.from_config(model.config)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    flops = None
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in ids], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        if state is not None:
            state.record = True
        out[ids] = embed(model, dict(batch), pooling, state).float().cpu().numpy()
        if state is not None:
            state.record = False
            part = batch_flops(dims, state.last.attn_counts.cpu(), max_length)
            flops = part if flops is None else flops + part
    return out, None if flops is None else flops.reduction_unpadded


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(min=1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(min=1e-12)
    return a @ b.T


def stsb_dev(data_dir) -> tuple[list[str], list[str], np.ndarray]:
    """The STS-B dev pairs and their gold scores."""
    from .data import load_glue_split

    dev = load_glue_split(data_dir, "stsb", "dev")
    return list(dev["text_a"]), list(dev["text_b"]), np.asarray(dev["label"], dtype=np.float64)


def spearman_of(left: np.ndarray, right: np.ndarray, gold: np.ndarray) -> float:
    """Spearman (x100) of the pairs' cosine similarity against the gold scores."""
    cos = np.sum(left * right, axis=1) / (np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)).clip(1e-12)
    return 100 * float(spearmanr(cos, gold).statistic)


def stsb_spearman(model, tokenizer, pooling: Pooling, data_dir, max_length: int = 256) -> dict:
    """STS-B dev Spearman (x100) of the cosine similarity of the pair's embeddings."""
    texts_a, texts_b, gold = stsb_dev(data_dir)
    left, flops_a = encode_with_flops(model, tokenizer, texts_a, pooling, max_length=max_length)
    right, flops_b = encode_with_flops(model, tokenizer, texts_b, pooling, max_length=max_length)
    out = {"stsb_spearman": spearman_of(left, right, gold), "stsb_pairs": len(gold)}
    if flops_a is not None:
        out["stsb_flops_reduction_unpadded"] = (flops_a + flops_b) / 2
    return out


def _squad(path):
    from .squad import TRAIN_ARTICLES, read_squad_json

    examples = read_squad_json(path)
    paragraphs = list(dict.fromkeys(e["context"] for e in examples))
    return examples, paragraphs, TRAIN_ARTICLES


def squad_training_texts(path, questions: bool = True) -> list[str]:
    """The paragraphs and (unless ``questions`` is False) the questions of the training articles (never the
    held-out ones retrieval is judged on)."""
    examples, _, train_articles = _squad(path)
    articles = sorted({e["article"] for e in examples})[:train_articles]
    kept = [e for e in examples if e["article"] in set(articles)]
    asked = [e["question"] for e in kept] if questions else []
    return list(dict.fromkeys([e["context"] for e in kept] + asked))


def retrieval_task(path) -> tuple[list[str], list[str], np.ndarray, int]:
    """(all paragraphs of the file, the held-out articles' questions, each question's paragraph index, the number
    of held-out articles)."""
    examples, paragraphs, train_articles = _squad(path)
    held = sorted({e["article"] for e in examples})[train_articles:]
    questions = [e for e in examples if e["article"] in set(held)]
    index = {text: i for i, text in enumerate(paragraphs)}
    return paragraphs, [e["question"] for e in questions], np.array([index[e["context"]] for e in questions]), len(held)


def retrieval_metrics(queries: np.ndarray, docs: np.ndarray, gold: np.ndarray, ks=(1, 5, 10)) -> dict:
    """recall@k and MRR (x100) of ranking ``docs`` by cosine to each query; ``gold``: each query's doc index."""
    scores = _cosines(queries, docs)
    labels = np.arange(len(docs))
    out = {f"recall@{k}": 100 * float(top_k_accuracy_score(gold, scores, k=k, labels=labels)) for k in ks}
    relevant = np.zeros_like(scores, dtype=bool)
    relevant[np.arange(len(gold)), gold] = True
    out["mrr"] = 100 * float(label_ranking_average_precision_score(relevant, scores))  # one relevant: MRR
    return out


def squad_retrieval(
    model, tokenizer, pooling: Pooling, path, max_length: int = 256, ks=(1, 5, 10), query_model=None
) -> dict:
    """Questions of the held-out articles against all paragraphs of the file: recall@k and MRR (x100).
    ``query_model``: encodes the questions instead of ``model`` (e.g. the dense model: queries are few and short,
    the corpus is what a pruned model speeds up)."""
    paragraphs, questions, gold, held = retrieval_task(path)
    docs, flops = encode_with_flops(model, tokenizer, paragraphs, pooling, max_length=max_length)
    queries, _ = encode_with_flops(query_model or model, tokenizer, questions, pooling, max_length=max_length)
    out = retrieval_metrics(queries, docs, gold, ks)
    out.update(questions=len(questions), paragraphs=len(paragraphs), heldout_articles=held)
    if flops is not None:
        out["passages_flops_reduction_unpadded"] = flops
    return out
