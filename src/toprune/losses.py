"""The losses of a pruning run besides the ranking loss (ranking.py): logit distillation from the teacher and the
Lagrangian FLOPs constraint (METHOD.md §5, §6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .qa import qa_distillation_loss
from .train import task_loss


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels,
    regression: bool,
    temperature: float,
    mask: torch.Tensor | None = None,
):
    """Logit KD; QA logits (B, N, 2) distil the start and end distributions over the real tokens (``mask``)."""
    if student.dim() == 3:
        return qa_distillation_loss(student, teacher, mask, temperature)
    if regression:  # METHOD.md §6: STS-B learns from its labels (MSE), not from the teacher
        return task_loss(student, labels, regression=True)
    t = temperature
    return (
        t
        * t
        * F.kl_div(
            F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True, reduction="batchmean"
        )
    )


def lagrangian(expected_sparsity: torch.Tensor, target: float, lambdas: torch.Tensor) -> torch.Tensor:
    gap = expected_sparsity - target
    return lambdas[0] * gap + lambdas[1] * gap * gap


@torch.no_grad()
def anti_windup_(lambdas: torch.Tensor, gap: float) -> None:
    """[ours] Keep lambda1 on the side of the current gap s - t: it may push the sparsity toward the target, never
    away from it. Plain ascent integrates the gap: while the sparsity lags (gate logits start saturated and move at
    most about gate_lr per Adam step) lambda1 winds up, and it keeps pushing after the target is passed until the same
    number of steps has unwound it (the overshoot; benchmarks/README.md "Gate collapse: diagnosis")."""
    if gap > 0:
        lambdas[0].clamp_(min=0.0)
    elif gap < 0:
        lambdas[0].clamp_(max=0.0)


def ascend_multipliers_(lambdas: torch.Tensor, lambda_opt: torch.optim.Optimizer, anti_windup: bool) -> float:
    """One step of the multipliers, which *maximise* the Lagrangian that the model and the gates minimise: their
    gradient negated, ``lambda_opt`` stepped, then (``anti_windup``) :func:`anti_windup_`. Call it after the
    backward pass (and any averaging of the gradient across processes); it touches only ``lambdas``, so the other
    optimizers may step before or after it. Returns the gap s - t (the gradient of lambda1) it acted on."""
    gap = lambdas.grad[0].item()
    lambdas.grad.neg_()  # gradient ascent
    lambda_opt.step()
    if anti_windup:
        anti_windup_(lambdas, gap)
    return gap
