"""Attention core and token importance (METHOD.md §2).

The importance of token j at layer l is the attention it *receives*, averaged over all heads and over the valid
query rows (real tokens not yet pruned). Averaging over valid rows only is our choice [ours]: the authors include
padding rows, so their ranking changes with the padded length; ours does not, and is the same at training and
inference time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .adapters import BlockParts


def self_attention(
    parts: BlockParts,
    hidden: torch.Tensor,
    key_mask: torch.Tensor | None,
    need_probs: bool,
    training: bool,
    key_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Multi-head self-attention context of ``hidden`` (B, n, d); probabilities only when asked for; the values
    (B, H, n, d_head), for scores that weigh attention by what a token carries.

    ``key_mask`` is a bool (B, n) tensor of keys that may be attended (None: all); ``key_bias`` (B, n) is added to
    every row's logits for that key (merged tokens' log sizes, :mod:`toprune.merging`). Without ``need_probs`` this is
    SDPA, the same kernel the dense Hugging Face baseline uses; with it, an explicit softmax whose probabilities
    are returned for scoring.
    """
    bsz, n, _ = hidden.shape
    heads = parts.num_heads
    q = parts.query(hidden).view(bsz, n, heads, -1).transpose(1, 2)
    k = parts.key(hidden).view(bsz, n, heads, -1).transpose(1, 2)
    v = parts.value(hidden).view(bsz, n, heads, -1).transpose(1, 2)
    dropout = parts.attn_dropout if training else 0.0
    mask4d = None if key_mask is None else key_mask[:, None, None, :]
    bias4d = None if key_bias is None else key_bias[:, None, None, :].to(q.dtype)
    if need_probs:
        # scaled and masked in place: one (B, H, n, n) buffer instead of three (same values, bit for bit)
        logits = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
        if bias4d is not None:
            logits.add_(bias4d)
        if mask4d is not None:
            logits.masked_fill_(~mask4d, torch.finfo(logits.dtype).min)
        probs = logits.softmax(dim=-1)
        context = torch.matmul(F.dropout(probs, dropout, training) if dropout else probs, v)
    else:
        probs = None
        if bias4d is not None:  # a float mask: the bias, and the lowest value where a key may not be attended
            mask4d = bias4d if mask4d is None else bias4d.masked_fill(~mask4d, torch.finfo(q.dtype).min)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask4d, dropout_p=dropout)
    return context.transpose(1, 2).reshape(bsz, n, -1), probs, v


def token_scores(
    probs: torch.Tensor, query_mask: torch.Tensor | None, value_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention received by each key, mean over heads and valid query rows: (B, H, n, n) -> (B, n).

    ``value_norms`` (B, H, n) [ours]: each head's attention to a key weighted by the norm of the key's value vector,
    i.e. the size of what the key actually adds to the rows' context (Kobayashi et al., EMNLP 2020). Separators and
    punctuation absorb much attention and add little; for mean-pooled sentence embeddings this ranks the tokens the
    mean needs higher (measured: benchmarks/README.md section 11)."""
    if value_norms is not None:
        if query_mask is None:
            return (probs.mean(dim=2) * value_norms).mean(dim=1)
        rows = query_mask.to(probs.dtype)
        received = torch.matmul(rows[:, None, None, :], probs).squeeze(2)  # (B, H, n), per head
        weighted = (received * value_norms).sum(dim=1)
        return weighted / (probs.shape[1] * rows.sum(dim=1, keepdim=True).clamp(min=1.0))
    if query_mask is None:
        return probs.mean(dim=(1, 2))
    rows = query_mask.to(probs.dtype)
    # heads summed first, then one (1 x n) @ (n x n) product per example: on the CPU far cheaper than the
    # equivalent einsum("bhqk,bq->bk") (measured: benchmarks/README.md section 1)
    received = torch.matmul(rows.unsqueeze(1), probs.sum(dim=1)).squeeze(1)
    return received / (probs.shape[1] * rows.sum(dim=1, keepdim=True).clamp(min=1.0))


def question_rows(segments: torch.Tensor | None, valid: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: the query rows of question-guided scores [ours]: the first segment's tokens without CLS and
    the separator closing it (BERT-style pairs: token type 0). ``segments`` is ``token_type_ids`` (None: one
    segment, i.e. every real token but CLS and the last one). In extractive QA the context tokens that the
    question attends to are the answer candidates; the attention *every* row gives ranks them worse
    (measured on zero-shot SQuAD: benchmarks/README.md section 6)."""
    first = valid if segments is None else valid & (segments == 0)
    end = first.sum(dim=1, keepdim=True) - 1  # the closing separator's position
    slots = torch.arange(valid.shape[1], device=valid.device)
    return (slots >= 1) & (slots < end)


def score_rows(rows: torch.Tensor | None, valid: torch.Tensor | None) -> torch.Tensor | None:
    """The rows that score a layer: the surviving question rows, or every valid row (``rows`` None, or an example
    whose question tokens were all pruned)."""
    if rows is None:
        return valid
    alive = rows if valid is None else rows & valid
    orphan = ~alive.any(dim=1, keepdim=True)  # logic ops, not a bool where: ONNX Runtime has no bool Where kernel
    return alive | (orphan if valid is None else orphan & valid)


def spread_scores(
    scores: torch.Tensor, radius: int, positions: torch.Tensor | None = None, length: int | None = None
) -> torch.Tensor:
    """[ours] Each token's score raised to the best score within ``radius`` positions of it in the *original* input
    (a 1-D max filter), plus a thousandth of its own score so that a peak still ranks above its neighbours.

    For extractive QA: the question rows attend to the context words that match the question, and the answer sits
    next to them, not on them; spreading keeps a window around every match (measured on zero-shot
    SQuAD: benchmarks/README.md section 6). ``positions`` (B, n) are the original positions, all below ``length``,
    of the current slots (the gather path, where the sequence is already shortened; None: the slots are the original
    positions). Scores must be >= 0, as attention received is: pruned and padding positions count as 0 in both
    paths alike."""
    if radius <= 0:
        return scores
    # laid out at the original positions (unique per example), filtered there, read back at the slots
    full = scores if positions is None else scores.new_zeros(scores.shape[0], length).scatter_(1, positions, scores)
    n = full.shape[1]
    padded = F.pad(full, (radius, radius))
    # the max of 2r+1 shifted slices, not max_pool1d: its export pins the sequence length of ONNX graphs
    spread = padded[:, 0:n]
    for shift in range(1, 2 * radius + 1):
        spread = torch.maximum(spread, padded[:, shift : shift + n])
    if positions is not None:
        spread = spread.gather(1, positions)
    return spread + 1e-3 * scores


def sort_indices(x: torch.Tensor, descending: bool, stable: bool = True) -> torch.Tensor:
    """argsort along dim 1; ``stable=False`` uses TopK, which exports to ONNX (whose TopK breaks ties by lower
    index: stable in effect), while torch's argsort exports to a sort that ONNX cannot express."""
    if stable:
        return x.argsort(dim=1, descending=descending, stable=True)
    return x.topk(x.shape[1], dim=1, largest=descending).indices


def rank_bins(scores: torch.Tensor, candidates: torch.Tensor, num_bins: int, stable: bool = True) -> torch.Tensor:
    """Rank bin of every candidate token, batched (METHOD.md §4).

    Candidates are the prunable survivors (not CLS, not padding, not yet pruned). Bin 0 holds the best-scored
    tokens: a candidate of rank r among m candidates falls in bin floor(r * K / m). Non-candidates get bin K
    (out of range on purpose, so callers can index a K+1 table whose last entry means "not a candidate").
    ``stable=False`` is for exported graphs (ONNX has no stable sort; its TopK breaks ties by lower index anyway).
    """
    bsz, n = scores.shape
    masked = scores.masked_fill(~candidates, float("-inf"))
    order = sort_indices(masked, descending=True, stable=stable)
    positions = torch.arange(n, device=scores.device).expand(bsz, n)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    count = candidates.sum(dim=1, keepdim=True).clamp(min=1)
    bins = torch.div(ranks * num_bins, count, rounding_mode="floor")
    return torch.where(candidates, bins, torch.full_like(bins, num_bins))
