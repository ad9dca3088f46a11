import torch

from toprune.scoring import rank_bins, token_scores


def test_token_scores_average_over_heads_and_valid_rows_only():
    probs = torch.rand(1, 2, 4, 4).softmax(-1)
    probs[:, :, 3] = 100.0  # row of a padding query: must not count
    mask = torch.tensor([[True, True, True, False]])
    expected = probs[0, :, :3].sum(dim=(0, 1)) / (2 * 3)
    assert torch.allclose(token_scores(probs, mask)[0], expected)


def test_token_scores_unaffected_by_extra_padding():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 5, 5)
    short = logits.softmax(-1)
    padded_logits = torch.full((1, 3, 8, 8), -1e9)
    padded_logits[:, :, :, :5] = 0
    padded_logits[:, :, :5, :5] = logits
    padded = padded_logits.softmax(-1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    assert torch.allclose(token_scores(padded, mask)[0, :5], token_scores(short, None)[0], atol=1e-6)


def test_rank_bins_best_tokens_in_bin_zero():
    scores = torch.tensor([[9.0, 0.1, 0.5, 0.3, 0.9, 0.0]])
    candidates = torch.tensor([[False, True, True, True, True, False]])  # CLS and padding are not candidates
    bins = rank_bins(scores, candidates, num_bins=2)
    # ranks among the 4 candidates: 0.9 -> 0, 0.5 -> 1, 0.3 -> 2, 0.1 -> 3; bin = rank * 2 // 4
    assert bins.tolist() == [[2, 1, 0, 1, 0, 2]]


def test_rank_bins_per_example_counts():
    scores = torch.rand(2, 6)
    candidates = torch.tensor([[False, True, True, False, False, False], [False, True, True, True, True, True]])
    bins = rank_bins(scores, candidates, num_bins=10)
    assert sorted(bins[0, 1:3].tolist()) == [0, 5]
    assert sorted(bins[1, 1:].tolist()) == [0, 2, 4, 6, 8]
