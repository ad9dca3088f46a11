import torch

from toprune.scoring import question_rows, rank_bins, score_rows, spread_scores, token_scores


def test_token_scores_average_over_heads_and_valid_rows_only():
    probs = torch.rand(1, 2, 4, 4).softmax(-1)
    probs[:, :, 3] = 100.0  # row of a padding query: must not count
    mask = torch.tensor([[True, True, True, False]])
    expected = probs[0, :, :3].sum(dim=(0, 1)) / (2 * 3)
    assert torch.allclose(token_scores(probs, mask)[0], expected)


def test_value_weighted_scores_weigh_each_heads_attention_by_the_keys_value_norm():
    """Oracle: sum over heads and valid rows of p[h, i, j] * |v[h, j]|, over (heads x valid rows); uniform value
    norms give the plain score times that norm; a key with a zero value vector scores 0 however much it is seen."""
    torch.manual_seed(0)
    probs = torch.rand(2, 3, 5, 5).softmax(-1)
    norms = torch.rand(2, 3, 5) + 0.1
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    expected = torch.einsum("bq,bhqk,bhk->bk", mask.float(), probs, norms) / (3 * mask.sum(1, keepdim=True))
    torch.testing.assert_close(token_scores(probs, mask, norms), expected)
    torch.testing.assert_close(token_scores(probs, None, norms), torch.einsum("bhqk,bhk->bk", probs, norms) / 15)
    torch.testing.assert_close(token_scores(probs, mask, torch.full_like(norms, 2.0)), 2 * token_scores(probs, mask))
    probs[:, :, :, 4] += 10.0  # key 4 absorbs the attention ...
    norms[:, :, 4] = 0.0  # ... and carries nothing
    assert (token_scores(probs, mask, norms)[:, 4] == 0).all() and (token_scores(probs, mask)[:, 4] > 0.5).all()


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


def test_question_rows_are_first_segment_without_cls_and_separator():
    # [CLS] q1 q2 [SEP] c1 c2 [SEP] pad   and   [CLS] q1 [SEP] c1 [SEP] pad pad pad
    segments = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0, 0, 0]])
    valid = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0, 0]]).bool()
    rows = question_rows(segments, valid)
    assert rows.tolist() == [
        [False, True, True, False, False, False, False, False],
        [False, True, False, False, False, False, False, False],
    ]
    single = question_rows(None, valid)  # one segment: every real token but CLS and the last
    assert single[0].tolist() == [False, True, True, True, True, True, False, False]


def test_score_rows_fall_back_to_every_valid_row_when_no_question_row_survives():
    rows = torch.tensor([[False, True, False], [False, False, False]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    assert score_rows(rows, valid).tolist() == [[False, True, False], [True, True, False]]
    assert score_rows(None, valid) is valid
    assert score_rows(rows, None).tolist() == [[False, True, False], [True, True, True]]


def test_question_guided_scores_use_only_question_rows():
    probs = torch.zeros(1, 1, 3, 3)
    probs[0, 0, 1] = torch.tensor([0.0, 0.0, 1.0])  # the question row attends to token 2
    probs[0, 0, 0] = torch.tensor([0.0, 1.0, 0.0])  # CLS row attends to token 1
    probs[0, 0, 2] = torch.tensor([0.0, 1.0, 0.0])
    rows = torch.tensor([[False, True, False]])
    assert token_scores(probs, rows).argmax().item() == 2
    assert token_scores(probs, None).argmax().item() == 1


def test_spread_scores_is_a_max_filter_over_original_positions():
    scores = torch.tensor([[0.0, 0.1, 0.0, 0.0, 0.9, 0.0, 0.2]])
    spread = spread_scores(scores, 1)
    assert torch.allclose(spread - 1e-3 * scores, torch.tensor([[0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.2]]))
    assert int(spread[0, 3:6].argmax()) == 1  # the peak itself ranks first in its plateau
    assert torch.equal(spread_scores(scores, 0), scores)
    # a shortened sequence: slots at original positions 0, 2, 5, 6; the gaps (pruned tokens) count as 0
    positions = torch.tensor([[0, 2, 5, 6]])
    short = scores[:, [0, 2, 5, 6]] + torch.tensor([[0.0, 0.3, 0.0, 0.0]])
    got = spread_scores(short, 1, positions, 7) - 1e-3 * short
    assert torch.allclose(got, torch.tensor([[0.0, 0.3, 0.2, 0.2]]))  # position 2 no longer sees 0.1 at 1 (pruned)
