"""[ours, after ToMe (Bolya et al., ICLR 2023)] Removed tokens merged into the survivors instead of dropped.

A plan whose scoring says ``merge`` removes the very tokens it would drop (same counts, same FLOPs, plus one
(n x n) similarity product per pruning layer, about 0.5% of MiniLM-L6 at 150 tokens, not counted), but each removed
token is first added into its most similar survivor (cosine of their post-attention states) as a size-weighted
average. Every later attention adds log(size) to a merged key's logits ("proportional attention": a merged token is
attended as often as its members would be), and survivor pooling weights each survivor by its size, so at the merge
point the pooled mean is the one of every token. For mean-pooled sentence embeddings this keeps what the removed
tokens carried (measured zero-shot: benchmarks/README.md section 11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def merge_into_survivors(
    hidden: torch.Tensor, kept: torch.Tensor, valid: torch.Tensor, sizes: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``hidden`` (B, n, d) states, ``kept`` (B, n) the survivors, ``valid`` (B, n) real tokens, ``sizes`` (B, n)
    how many input tokens each slot stands for (None: one each). Returns the states with every removed token added
    into its most similar survivor (removed rows unchanged) and the new sizes."""
    sizes = valid.to(hidden.dtype) if sizes is None else sizes * valid.to(sizes.dtype)
    unit = F.normalize(hidden, dim=-1)
    similarity = (unit @ unit.transpose(1, 2)).masked_fill(~kept.unsqueeze(1), -2.0)  # only survivors receive
    target = similarity.argmax(dim=2)  # (B, n): each token's most similar survivor (a survivor: itself)
    gone = sizes * (valid & ~kept).to(sizes.dtype)  # weight of each removed token, 0 elsewhere
    dim = hidden.shape[-1]
    added = torch.zeros_like(hidden).scatter_add(
        1, target.unsqueeze(-1).expand(-1, -1, dim), hidden * gone.unsqueeze(-1).to(hidden.dtype)
    )
    new_sizes = sizes + torch.zeros_like(sizes).scatter_add(1, target, gone)
    merged = (hidden * sizes.unsqueeze(-1) + added) / new_sizes.clamp(min=1e-6).unsqueeze(-1)
    return torch.where(kept.unsqueeze(-1), merged, hidden), torch.where(kept, new_sizes, sizes)


def attention_bias(sizes: torch.Tensor | None) -> torch.Tensor | None:
    """(B, n) additive key bias of proportional attention, log(size); None when nothing was merged."""
    return None if sizes is None else sizes.clamp(min=1.0).log()
