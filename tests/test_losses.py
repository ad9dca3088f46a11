"""The pruning run's losses besides the ranking loss: logit distillation and the Lagrangian FLOPs constraint."""

import pytest
import torch
import torch.nn.functional as F

from toprune.losses import ascend_multipliers_, distillation_loss, lagrangian
from toprune.qa import qa_distillation_loss


def test_lagrangian_is_lambda1_gap_plus_lambda2_gap_squared():
    lambdas = torch.tensor([2.0, 3.0])
    assert float(lagrangian(torch.tensor(0.3), 0.5, lambdas)) == pytest.approx(2.0 * -0.2 + 3.0 * 0.04)
    assert float(lagrangian(torch.tensor(0.7), 0.5, lambdas)) == pytest.approx(2.0 * 0.2 + 3.0 * 0.04)


def test_lagrangian_multipliers_grow_while_constraint_violated_and_push_sparsity_up():
    lambdas = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([lambdas], lr=0.1)
    sparsity = torch.tensor(0.1, requires_grad=True)
    for _ in range(5):
        opt.zero_grad()
        lagrangian(sparsity, 0.5, lambdas).backward()
        assert ascend_multipliers_(lambdas, opt, anti_windup=False) == pytest.approx(0.1 - 0.5)  # the run's step
    assert lambdas[0] < 0 and lambdas[1] > 0  # both terms grew in the direction that penalises the violation
    sparsity.grad = None
    lagrangian(sparsity, 0.5, lambdas.detach()).backward()
    assert sparsity.grad < 0  # descent on the model side increases the sparsity


def test_multiplier_ascent_with_anti_windup_keeps_lambda1_on_the_side_of_the_gap():
    lambdas = torch.nn.Parameter(torch.tensor([-2.0, 1.0]))
    opt = torch.optim.SGD([lambdas], lr=0.1)
    sparsity = torch.tensor(0.7)  # above the target 0.5: gap +0.2, so ascent raises both multipliers
    lagrangian(sparsity, 0.5, lambdas).backward()
    assert ascend_multipliers_(lambdas, opt, anti_windup=True) == pytest.approx(0.2)
    assert lambdas.tolist() == pytest.approx([0.0, 1.0 + 0.1 * 0.04])  # -1.98 after the step, clamped to 0
    lambdas.grad = None
    lagrangian(sparsity, 0.5, lambdas).backward()
    ascend_multipliers_(lambdas, opt, anti_windup=False)
    assert lambdas[0].item() == pytest.approx(0.02)  # plain ascent on its own


def test_classification_distillation_is_t_squared_kl_from_the_teacher():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.3, 0.1]])
    teacher = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.2, 0.4]])
    t = 2.0
    p, q = (student / t).softmax(-1), (teacher / t).softmax(-1)
    expected = t * t * float((q * (q.log() - p.log())).sum(-1).mean())  # KL(teacher || student), batch mean
    assert float(distillation_loss(student, teacher, None, False, t)) == pytest.approx(expected, rel=1e-5)
    assert distillation_loss(teacher, teacher, None, False, t).abs() < 1e-6


def test_regression_learns_from_labels_not_from_the_teacher():
    student = torch.tensor([[1.0], [3.0]])
    assert float(distillation_loss(student, None, torch.tensor([2.0, 3.0]), True, 2.0)) == pytest.approx(0.5)
    assert float(distillation_loss(student, torch.zeros(2, 1), torch.tensor([1.0, 3.0]), True, 7.0)) == 0.0


def test_qa_logits_distil_start_and_end_over_the_real_tokens():
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 2, generator=gen), torch.randn(2, 5, 2, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    got = distillation_loss(student, teacher, None, False, 3.0, mask)
    assert float(got) == pytest.approx(float(qa_distillation_loss(student, teacher, mask, 3.0)))
    # by hand: T^2 KL of each start/end distribution over the real tokens, averaged over the B*2 distributions
    total = 0.0
    for b in range(2):
        n = int(mask[b].sum())
        for j in range(2):
            p = F.log_softmax(student[b, :n, j] / 3.0, -1)
            q = F.log_softmax(teacher[b, :n, j] / 3.0, -1)
            total += float((q.exp() * (q - p)).sum())
    assert float(got) == pytest.approx(9.0 * total / 4, rel=1e-4)
