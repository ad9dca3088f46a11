"""Survivor selection in rank order (toprune.survivors) against the slot-order rule it replaced (scoring.rank_bins)."""

import pytest
import torch

from toprune.plan import kept_ranks
from toprune.scoring import rank_bins
from toprune.survivors import keep_at_slots, rank_keep, rank_table, survivor_slots


def _reference(scores, valid, kept_bins):
    """The former runtime code: bins per slot, CLS kept, survivors in original order then the others."""
    table = torch.tensor([*kept_bins, False])
    candidates = valid.clone()
    candidates[:, 0] = False
    keep = table[rank_bins(scores, candidates, len(kept_bins))]
    keep[:, 0] = True
    n = scores.shape[1]
    slots = torch.arange(n)
    order = torch.where(keep, slots, slots + n).argsort(dim=1, stable=True)
    return keep, order[:, : int(keep.sum(dim=1).max())]


@pytest.mark.parametrize("seed", range(6))
def test_rank_order_selection_equals_the_slot_order_rule(seed):
    gen = torch.Generator().manual_seed(seed)
    k = int(torch.randint(1, 21, (1,), generator=gen))
    kept_bins = (torch.rand(k, generator=gen) < 0.6).tolist()
    lengths = torch.randint(1, 30, (7,), generator=gen).tolist()
    n = max(lengths)
    valid = torch.arange(n) < torch.tensor(lengths).unsqueeze(1)
    # coarse scores: many exact ties, which must break to the lower slot as before
    scores = torch.randint(0, 4, (len(lengths), n), generator=gen).float() / 4
    keep, order = _reference(scores, valid, kept_bins)
    for size in (None, n, 40):  # computed bins, and the tables exported graphs read (any size >= n)
        ranked, kept = rank_keep(scores, valid, kept_bins, stable=True, size=size)
        assert torch.equal(keep_at_slots(ranked, kept), keep)
        slots = survivor_slots(ranked, kept, order.shape[1])
        n_keep = kept.sum(dim=1, keepdim=True)
        alive = torch.arange(order.shape[1]) < n_keep
        assert torch.equal(torch.where(alive, slots, -1), torch.where(alive, order, -1))  # survivors, in order
        assert int(slots.max()) < n  # the padding slots gather real rows


def test_rank_table_rows_follow_the_plan_rule():
    kept_bins = [True, False, True, True, False]
    table = rank_table(tuple(kept_bins), 12)
    assert table.shape == (13, 12) and table[:, 0].all()  # CLS survives at every count
    for m in range(12):
        assert table[m, 1:].nonzero().flatten().tolist() == kept_ranks(kept_bins, m)  # column r + 1: rank r
