"""Ranking distillation (METHOD.md §3): teacher top-k labels and the LambdaLoss ARP2 pairwise loss."""

from __future__ import annotations

import math

import pytest
import torch

from toprune.ranking import answer_labels, answer_relevance, ranking_distillation_loss, ranking_labels


def _valid(lengths, n=None):
    n = n or max(lengths)
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def _reference_loss(student, labels, k):
    """Brute force, pure Python: double loop over pairs, math.log/exp only."""
    s, y = student.tolist(), labels.tolist()
    total = 0.0
    for s_row, y_row in zip(s, y):
        row = 0.0
        for a in range(len(y_row)):
            for c in range(len(y_row)):
                if y_row[a] > y_row[c] > 0:
                    row += (y_row[a] - y_row[c]) * math.log2(1.0 + math.exp(-(s_row[a] - s_row[c])))
        total += row / k**2
    return total / len(s)


def _random_case(seed, lengths, k, n=None):
    gen = torch.Generator().manual_seed(seed)
    valid = _valid(lengths, n)
    teacher = torch.rand(valid.shape, generator=gen)
    student = torch.randn(valid.shape, generator=gen, dtype=torch.float64).float() * 2
    return teacher, valid, ranking_labels(teacher, valid, k), student


# ---------------------------------------------------------------- labels


def test_labels_hand_example():
    teacher = torch.tensor([[9.0, 0.1, 0.7, 0.3, 0.9, 0.5]])
    labels = ranking_labels(teacher, torch.ones(1, 6, dtype=torch.bool), k=3)
    # CLS (9.0) is skipped; best candidates 0.9 (pos 4) -> 3, 0.7 (pos 2) -> 2, 0.5 (pos 5) -> 1.
    assert labels.tolist() == [[0.0, 0.0, 2.0, 0.0, 3.0, 1.0]]


def test_labels_dtype_shape_and_grades_per_row():
    teacher, valid, labels, _ = _random_case(0, [12, 9, 15], k=5)
    assert labels.shape == teacher.shape and labels.dtype == torch.float32
    for row in labels:
        assert sorted(row[row > 0].tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_labels_follow_teacher_order():
    teacher, valid, labels, _ = _random_case(1, [20, 14], k=6)
    for b in range(2):
        graded = (labels[b] > 0).nonzero().flatten()
        by_label = graded[labels[b, graded].argsort(descending=True)]
        by_teacher = graded[teacher[b, graded].argsort(descending=True)]
        assert by_label.tolist() == by_teacher.tolist()
        # every ungraded candidate scores below the worst graded one
        rest = valid[b].clone()
        rest[0] = False
        rest[graded] = False
        assert (teacher[b, rest] < teacher[b, graded].min()).all()


def test_labels_never_on_cls():
    teacher = torch.tensor([[100.0, 1.0, 2.0, 3.0], [100.0, 3.0, 2.0, 1.0]])
    labels = ranking_labels(teacher, torch.ones(2, 4, dtype=torch.bool), k=3)
    assert (labels[:, 0] == 0).all()
    assert labels.tolist() == [[0.0, 1.0, 2.0, 3.0], [0.0, 3.0, 2.0, 1.0]]


def test_labels_never_on_padding():
    teacher = torch.tensor([[0.0, 0.2, 0.1, 50.0, 60.0]])  # huge scores on padding
    labels = ranking_labels(teacher, _valid([3], n=5), k=2)
    assert labels.tolist() == [[0.0, 2.0, 1.0, 0.0, 0.0]]


def test_labels_fewer_candidates_than_k_keep_top_grades():
    teacher = torch.tensor([[5.0, 0.2, 0.9, 0.4, 0.0, 0.0], [5.0, 0.3, 0.0, 0.0, 0.0, 0.0]])
    labels = ranking_labels(teacher, _valid([4, 2], n=6), k=5)
    # 3 candidates: grades 5, 4, 3; 1 candidate: grade 5 (the best always gets k).
    assert labels.tolist() == [[0.0, 3.0, 5.0, 4.0, 0.0, 0.0], [0.0, 5.0, 0.0, 0.0, 0.0, 0.0]]


def test_labels_k_larger_than_sequence():
    teacher = torch.tensor([[1.0, 0.5, 0.7]])
    labels = ranking_labels(teacher, torch.ones(1, 3, dtype=torch.bool), k=10)
    assert labels.tolist() == [[0.0, 9.0, 10.0]]


def test_labels_cls_only_example_is_all_zero():
    teacher = torch.rand(2, 4)
    labels = ranking_labels(teacher, _valid([1, 4]), k=2)
    assert (labels[0] == 0).all() and (labels[1] > 0).sum() == 2


def test_labels_candidate_scored_minus_inf_is_still_graded():
    teacher = torch.tensor([[0.0, float("-inf"), 0.3, 9.0]])
    labels = ranking_labels(teacher, _valid([3], n=4), k=3)
    assert labels.tolist() == [[0.0, 2.0, 3.0, 0.0]]


def test_labels_carry_no_gradient():
    teacher = torch.rand(2, 6, requires_grad=True)
    labels = ranking_labels(teacher, torch.ones(2, 6, dtype=torch.bool), k=3)
    assert not labels.requires_grad and labels.grad_fn is None


@pytest.mark.parametrize("k", [0, -1, 2.0, True])
def test_bad_k_rejected(k):
    with pytest.raises(ValueError, match=f"ranking top-k must be a positive int, got {k!r}"):
        ranking_labels(torch.rand(1, 4), torch.ones(1, 4, dtype=torch.bool), k)
    with pytest.raises(ValueError, match=f"ranking top-k must be a positive int, got {k!r}"):
        ranking_distillation_loss(torch.rand(1, 4), torch.zeros(1, 4), k)


# ---------------------------------------------------------------- loss value


@pytest.mark.parametrize(
    "seed, lengths, k, n",
    [
        (0, [8], 3, None),
        (1, [10, 6, 3], 4, None),
        (2, [16, 16], 10, None),
        (3, [5, 12, 9, 2], 6, 14),  # padding beyond the longest example, and a row with fewer candidates than k
        (4, [30, 7], 20, None),
        (5, [4, 4, 4], 1, None),  # k = 1: one labelled token, no pairs
    ],
)
def test_loss_matches_brute_force_reference(seed, lengths, k, n):
    _, _, labels, student = _random_case(seed, lengths, k, n)
    got = ranking_distillation_loss(student, labels, k)
    assert got.dim() == 0
    assert got.item() == pytest.approx(_reference_loss(student, labels, k), abs=1e-5, rel=1e-5)


def test_loss_ignores_scores_outside_labelled_list():
    _, valid, labels, student = _random_case(6, [9, 12], k=4)
    other = student.clone()
    other[labels == 0] = torch.randn(int((labels == 0).sum())) * 100
    assert torch.allclose(ranking_distillation_loss(student, labels, 4), ranking_distillation_loss(other, labels, 4))


def test_loss_finite_with_infinite_scores_on_unlabelled_positions():
    labels = torch.tensor([[0.0, 2.0, 1.0, 0.0]])
    student = torch.tensor([[float("-inf"), 0.5, 0.1, float("inf")]], requires_grad=True)
    loss = ranking_distillation_loss(student, labels, 2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_loss_stable_for_huge_margins():
    labels = torch.tensor([[0.0, 2.0, 1.0]])
    wrong = ranking_distillation_loss(torch.tensor([[0.0, -1e4, 1e4]]), labels, 2)
    right = ranking_distillation_loss(torch.tensor([[0.0, 1e4, -1e4]]), labels, 2)
    assert wrong.item() == pytest.approx(2e4 / math.log(2) / 4)  # 1 * 2e4 / ln 2 / k^2
    assert right.item() == 0.0


def test_loss_zero_without_pairs():
    assert ranking_distillation_loss(torch.randn(3, 5), torch.zeros(3, 5), 4).item() == 0.0


def test_agreeing_student_beats_reversed_student():
    teacher, valid, labels, _ = _random_case(7, [15, 11, 8], k=5)
    agree = labels * 10.0  # same order as the teacher, margins of 10 between grades
    reverse = -labels * 10.0
    low = ranking_distillation_loss(agree, labels, 5)
    high = ranking_distillation_loss(reverse, labels, 5)
    assert low.item() < 1e-3 < high.item()
    assert low < high


def test_loss_decreases_as_margins_grow():
    labels = torch.tensor([[0.0, 3.0, 2.0, 1.0, 0.0]])
    losses = [ranking_distillation_loss(labels * m, labels, 3).item() for m in (0.0, 0.5, 1.0, 4.0)]
    assert losses == sorted(losses, reverse=True)
    # all student scores equal: every pair costs log2(2) = 1; gains 1+2+1 = 4, over k^2 = 9
    assert losses[0] == pytest.approx(4 / 9)


# ---------------------------------------------------------------- gradient


def test_sgd_step_raises_top1_over_kth():
    teacher, valid, labels, student = _random_case(8, [12, 10], k=4)
    student.requires_grad_(True)
    ranking_distillation_loss(student, labels, 4).backward()
    for b in range(2):
        top1 = int((labels[b] == 4).nonzero())
        kth = int((labels[b] == 1).nonzero())
        assert student.grad[b, top1] < 0 and student.grad[b, kth] > 0
    with torch.no_grad():
        stepped = student - 0.5 * student.grad
    for b in range(2):
        top1, kth = int((labels[b] == 4).nonzero()), int((labels[b] == 1).nonzero())
        assert stepped[b, top1] - stepped[b, kth] > student[b, top1] - student[b, kth]


def test_no_gradient_to_unlabelled_positions():
    _, valid, labels, student = _random_case(9, [10, 7, 13], k=3)
    student.requires_grad_(True)
    ranking_distillation_loss(student, labels, 3).backward()
    assert (student.grad[labels == 0] == 0).all()
    assert (student.grad[labels > 0] != 0).any()


def test_gradient_matches_finite_differences():
    _, _, labels, student = _random_case(10, [7, 5], k=3)
    student = student.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: ranking_distillation_loss(s, labels, 3), (student,))


def test_batch_mean_over_examples():
    _, _, labels, student = _random_case(11, [9, 6, 11], k=4)
    whole = ranking_distillation_loss(student, labels, 4)
    singles = [ranking_distillation_loss(student[b : b + 1], labels[b : b + 1], 4) for b in range(3)]
    assert whole.item() == pytest.approx(sum(s.item() for s in singles) / 3, abs=1e-6)


# ---------------------------------------------------------------- answer target (QA)


def test_answer_relevance_hand_example():
    # start surely at 1, end at 2 or 3 with equal odds: tokens 1, 2 are inside for sure, 3 half the time
    big = 30.0
    start = torch.tensor([[0.0, big, 0.0, 0.0, 0.0]])
    end = torch.tensor([[0.0, 0.0, big, big, 0.0]])
    rel = answer_relevance(torch.stack([start, end], dim=-1), torch.ones(1, 5, dtype=torch.bool))
    assert torch.allclose(rel, torch.tensor([[0.0, 1.0, 1.0, 0.5, 0.0]]), atol=1e-6)


def test_answer_relevance_ignores_padding():
    logits = torch.zeros(1, 4, 2)
    logits[0, 3] = 100.0  # a padded position with huge logits
    rel = answer_relevance(logits, torch.tensor([[True, True, True, False]]))
    assert rel[0, 3] == 0 and torch.isfinite(rel).all() and rel[0, :3].max() > 0


def test_answer_labels_put_the_answer_region_above_every_other_candidate():
    logits = torch.full((2, 6, 2), -5.0)
    logits[0, 3] = 5.0  # example 0: the answer is token 3
    logits[1, 1, 0], logits[1, 2, 1] = 5.0, 5.0  # example 1: tokens 1..2
    valid = _valid([6, 4])
    labels = answer_labels(logits, valid, k=1)
    assert labels[0].tolist() == [0, 1, 1, 2, 1, 1]  # CLS 0, answer 2, every other candidate 1
    assert labels[1, 0] == 0 and labels[1, 4:].tolist() == [0, 0]  # padding 0
    assert sorted(labels[1, 1:3].tolist()) == [1, 2]  # top-1 of the two equally likely answer tokens
    wide = answer_labels(logits, valid, k=2)
    assert wide[1, 1:3].tolist() == [2, 2]


def test_answer_labels_train_the_answer_above_the_rest():
    """One SGD step on the loss with answer labels raises the answer token's score over every other token."""
    logits = torch.full((1, 8, 2), -5.0)
    logits[0, 5] = 5.0
    labels = answer_labels(logits, torch.ones(1, 8, dtype=torch.bool), k=1)
    student = torch.zeros(1, 8, requires_grad=True)
    ranking_distillation_loss(student, labels, 1).backward()
    moved = -student.grad[0]
    assert moved[5] > 0 and (moved[1:5] < 0).all() and (moved[6:] < 0).all() and moved[0] == 0


def test_answer_relevance_only_inside_the_context():
    logits = torch.zeros(1, 6, 2)
    logits[0, 1] = 10.0  # the teacher likes a question token (position 1) best
    logits[0, 4] = 5.0
    context = torch.tensor([[False, False, False, True, True, True]])
    rel = answer_relevance(logits, torch.ones(1, 6, dtype=torch.bool), context)
    assert rel[0, :3].tolist() == [0, 0, 0] and rel[0, 4] == rel[0].max()


def test_windows_without_an_answer_get_no_labels():
    """The teacher's "no answer here" (start and end on CLS: SQuAD's label for a window without the answer, and
    v2's unanswerable questions) must not make the question tokens the top-k."""
    logits = torch.zeros(2, 8, 2)
    logits[0, 0] = 10.0  # window 0: no answer
    logits[1, 6] = 10.0  # window 1: answer at token 6
    context = torch.zeros(2, 8, dtype=torch.bool)
    context[:, 4:] = True
    labels = answer_labels(logits, torch.ones(2, 8, dtype=torch.bool), 2, context)
    assert labels[0].abs().sum() == 0
    assert labels[1, 6] == 2 and labels[1, 1:4].tolist() == [1, 1, 1]


def test_per_pair_loss_is_the_mean_pair_loss():
    labels = torch.tensor([[0.0, 1, 2, 1, 1, 1], [0.0, 2, 1, 0, 0, 0]])  # 4 pairs and 1 pair
    loss = ranking_distillation_loss(torch.zeros(2, 6), labels, 1, per_pair=True)
    assert loss.item() == pytest.approx(1.0)  # log2(1 + e^0) = 1 for every pair, whatever the length
    long = torch.cat([labels, torch.ones(2, 50)], dim=1)
    assert ranking_distillation_loss(torch.zeros(2, 56), long, 1, per_pair=True).item() == pytest.approx(1.0)


def test_loss_refuses_mismatched_or_non_matrix_inputs():
    labels = ranking_labels(torch.randn(2, 5), _valid([5, 3]), 3)
    with pytest.raises(ValueError, match=r"student scores \(2, 4\) and labels \(2, 5\) must both be \(B, N\)"):
        ranking_distillation_loss(torch.randn(2, 4), labels, 3)
    with pytest.raises(ValueError, match=r"student scores \(2, 5, 1\) and labels \(2, 5, 1\) must both be \(B, N\)"):
        ranking_distillation_loss(torch.randn(2, 5, 1), labels[..., None], 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_loss_upcasts_half_precision_and_keeps_float64(dtype):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 6, generator=gen)
    labels = ranking_labels(torch.randn(2, 6, generator=gen), _valid([6, 4]), 3)
    loss = ranking_distillation_loss(scores.to(dtype), labels, 3)
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    # the half-precision scores themselves are rounded, the loss is not computed in half precision
    assert float(loss) == pytest.approx(_reference_loss(scores.to(dtype).double(), labels, 3), rel=1e-6)
