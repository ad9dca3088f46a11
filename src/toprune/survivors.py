"""Which tokens survive a pruning layer, batched and with padding: the few tensor ops the exported graphs run.

Same rule as :func:`toprune.scoring.rank_bins` with a kept-bins table (METHOD.md §4): CLS always survives; the m
candidates (real tokens but CLS) are ranked by score, best first, ties to the lower slot; rank r falls in bin
floor(r * K / m) and survives if the plan keeps that bin. Here everything stays in *rank order*: one sort of the
scores, the kept-bins table read per rank position, and no inverse permutation (a scatter) back to the slots. At
batch 1 an exported graph is dominated by the count of such small ops, not by their size.
"""

from __future__ import annotations

import functools

import torch

from .plan import below_floor, kept_ranks
from .scoring import sort_indices


def bin_table(kept_bins) -> torch.Tensor:
    """(K + 1,) bool: is bin b kept; entry K (non-candidates: padding, already pruned) is False."""
    return torch.tensor([*kept_bins, False], dtype=torch.bool)


# The caches hold Python data, never tensors: a tensor made while one export traces the model is a fake tensor of
# that trace, and handing it to the next export makes torch.export fall back to its (minutes slower) strict tracer.
@functools.lru_cache(maxsize=64)
def _rank_rows(kept_bins: tuple[bool, ...], size: int, min_tokens: int = 0) -> tuple[tuple[bool, ...], ...]:
    rows = [[True] + [False] * (size - 1) for _ in range(size + 1)]
    for m in range(1, size):  # m candidates fill rank positions 1..m
        for r in kept_ranks(list(kept_bins), m, min_tokens):
            rows[m][r + 1] = True
    return tuple(tuple(row) for row in rows)


def rank_table(kept_bins: tuple[bool, ...], size: int, min_tokens: int = 0) -> torch.Tensor:
    """(size + 1, size) bool: row m (candidates), column r (rank position, 0 = CLS): does r survive. The plan's own
    rule (:func:`toprune.plan.kept_ranks`, its token floor included) for every m at once: an exported graph reads one
    row per example instead of computing the bins (a chain of a dozen small ops per layer)."""
    rows = _rank_rows(kept_bins, size, min_tokens)
    return torch.tensor(rows, dtype=torch.bool)  # Python data: a constant in a traced graph


def rank_keep(
    scores: torch.Tensor,
    valid: torch.Tensor,
    kept_bins: list[bool],
    stable: bool = True,
    size: int | None = None,
    table: torch.Tensor | None = None,
    min_tokens: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots by rank and whether each rank position survives: (B, n) scores, (B, n) bool valid, a layer's kept bins
    -> order (B, n) slot indices (CLS first, then the candidates best first, then padding), kept (B, n) bool per rank
    position. ``stable=False``: TopK (exported graphs). ``size``: read ``kept`` from :func:`rank_table` of that many
    positions (at least n; exported graphs) instead of computing the bins. ``min_tokens``: the plan's token floor
    (:func:`toprune.plan.below_floor`: an example under it keeps every candidate)."""
    n = scores.shape[1]
    slots = torch.arange(n, device=scores.device)
    # CLS ranks first (+inf), padding last (-inf): the candidates hold rank positions 1..m (one data-dependent op:
    # the rest derives from the mask alone)
    fill = torch.where(slots == 0, float("inf"), float("-inf"))
    ranked = torch.where(valid & (slots >= 1), scores, fill)
    order = sort_indices(ranked, descending=True, stable=stable)
    m = valid.sum(dim=1) - 1  # candidates: CLS is always valid
    if size is not None:
        return order, rank_table(tuple(kept_bins), size, min_tokens).to(scores.device).index_select(0, m)[:, :n]
    m = m.unsqueeze(1)
    num_bins = len(kept_bins)
    candidate = (slots >= 1) & (slots <= m)  # rank position r >= 1 is the candidate of rank r - 1
    bins = torch.where(candidate, torch.div((slots - 1) * num_bins, m.clamp(min=1), rounding_mode="floor"), num_bins)
    table = (bin_table(kept_bins) if table is None else table).to(scores.device)
    kept = table.index_select(0, bins.reshape(-1)).view(bins.shape) | (slots == 0)
    if min_tokens:
        kept = kept | (candidate & below_floor(m, min_tokens))  # per example
    return order, kept


def survivor_slots(order: torch.Tensor, kept: torch.Tensor, length, stable: bool = True) -> torch.Tensor:
    """The survivors' slots in their original order (CLS first), then the others', cut to ``length`` (the longest
    survivor list of the batch; may be symbolic): (B, length). A unique key per slot, so no stable sort is needed."""
    key = torch.where(kept, order, order + order.shape[1])
    index = key.argsort(dim=1) if stable else key.topk(length, dim=1, largest=False).indices
    return order.gather(1, index[:, :length])


def keep_at_slots(order: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """(B, n) bool per slot from the rank-order ``kept`` (for the restore step, which writes the dropped tokens)."""
    return torch.zeros_like(kept).scatter(1, order, kept)
