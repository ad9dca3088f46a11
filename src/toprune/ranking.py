"""Ranking distillation (METHOD.md §3).

The final layer of the unpruned teacher ranks tokens well; the student's early score layers rank them poorly. We
distil the teacher's ranking into the student with two pure, batched functions:

* ``ranking_labels``: per example, the teacher's top-k tokens graded linearly, k for the best down to 1, 0 elsewhere;
* ``ranking_distillation_loss``: LambdaLoss "ARP2" pairwise loss of one student score layer against those labels.

The caller sums the loss over the student score layers (1..L/4) and applies the warm-up weight.

For extractive QA the teacher's final attention says little about where the answer is (benchmarks/README.md §6), so
``answer_labels`` [ours] offers another target: the teacher's top-k tokens by answer relevance (the probability,
from its start/end logits, that a token lies inside the answer span) graded above every other token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"ranking top-k must be a positive int, got {k!r}")


@torch.no_grad()
def ranking_labels(teacher_scores: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """Graded relevance labels (B, N) float32 from the teacher's scores (B, N).

    Candidates are the ``valid`` (bool, B x N) positions except position 0: CLS is never scored nor pruned. The
    teacher's best candidate gets k, the next k-1, ..., the k-th gets 1; every other position gets 0. With only
    m < k candidates the grades are k, k-1, ..., k-m+1 (the best always gets k). Ties are broken by ``topk``.
    Labels are targets: computed without autograd, they carry no gradient.
    """
    _check_k(k)
    bsz, n = teacher_scores.shape
    candidates = valid.bool().clone()
    candidates[:, 0] = False
    # Non-candidates must sort strictly after every candidate: candidates' scores are made finite (a -inf or NaN
    # score becomes the lowest finite float), then non-candidates are set to -inf.
    lowest = torch.finfo(torch.float32).min
    finite = teacher_scores.detach().float().nan_to_num(nan=lowest, neginf=lowest)
    masked = finite.masked_fill(~candidates, float("-inf"))
    width = min(k, n)  # topk needs width <= N; rows shorter than k simply have fewer graded tokens
    top_idx = masked.topk(width, dim=1, largest=True, sorted=True).indices  # (B, width), best first
    grades = torch.arange(k, k - width, -1, device=teacher_scores.device, dtype=torch.float32)  # k, k-1, ...
    grades = grades.expand(bsz, width)
    # Picks beyond an example's m candidates landed on non-candidates: grade them 0. Candidates always come
    # first in the top-k order, so the m real picks keep grades k..k-m+1.
    grades = grades * candidates.gather(1, top_idx).float()
    labels = torch.zeros(bsz, n, device=teacher_scores.device, dtype=torch.float32)
    # Indices are distinct within a row, so scatter (not scatter_add) is exact.
    return labels.scatter(1, top_idx, grades)


def ranking_distillation_loss(
    student_scores: torch.Tensor, labels: torch.Tensor, k: int, per_pair: bool = False
) -> torch.Tensor:
    """LambdaLoss "ARP2" pairwise loss of one student score layer (B, N) against ``labels`` (B, N); a scalar.

    Only the labelled list (label > 0) takes part; the rest is dropped. Per example:

        sum over pairs (a, c) with y_a > y_c > 0 of (y_a - y_c) * log2(1 + exp(-(s_a - s_c))),

    divided by k^2 (``per_pair``: by the example's number of pairs instead, for labels whose pair count grows with
    the length, as ``answer_labels``'); then the mean over the batch. log2(1 + exp(-x)) is computed as
    softplus(-x) / ln 2, which is stable for large |x|. Fully vectorised over (B, N, N) pair matrices;
    differentiable in ``student_scores``, with exactly zero gradient at unlabelled positions (even where their
    scores are not finite). Computed in at least float32 (half-precision scores are upcast; float64 stays float64).
    """
    _check_k(k)
    if student_scores.shape != labels.shape or student_scores.dim() != 2:
        raise ValueError(
            f"student scores {tuple(student_scores.shape)} and labels {tuple(labels.shape)} must both be (B, N)"
        )
    dtype = torch.promote_types(student_scores.dtype, torch.float32)
    y = labels.detach().to(dtype)
    labelled = y > 0
    # Zero the unlabelled scores first: they then receive no gradient and cannot turn a pair into inf - inf = nan.
    s = student_scores.to(dtype).masked_fill(~labelled, 0.0)

    # Pair matrices, index [b, a, c]: a is the better-graded token, c the worse one.
    y_a, y_c = y[:, :, None], y[:, None, :]
    pairs = (y_a > y_c) & labelled[:, None, :]  # y_a > y_c > 0 (so y_a > 0 too)
    gain = torch.where(pairs, y_a - y_c, torch.zeros((), device=y.device))  # (B, N, N), 0 off the pairs
    margin = s[:, :, None] - s[:, None, :]  # s_a - s_c
    pair_loss = F.softplus(-margin) / math.log(2.0)  # log2(1 + exp(-(s_a - s_c)))
    # where (not gain * pair_loss alone) keeps off-pair terms out of the sum entirely.
    weighted = torch.where(pairs, gain * pair_loss, torch.zeros((), device=y.device))
    norm = pairs.sum(dim=(1, 2)).clamp(min=1).to(dtype) if per_pair else float(k * k)
    per_example = weighted.sum(dim=(1, 2)) / norm
    return per_example.mean()


@torch.no_grad()
def _span_probs(logits: torch.Tensor, valid: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """Start/end probabilities (B, N, 2) over the valid tokens, zero outside ``context``: mass the teacher puts on
    CLS (its "no answer here") or on the question is mass on no answer in the context."""
    masked = logits.detach().float().masked_fill(~valid.bool().unsqueeze(-1), float("-inf"))
    probs = masked.softmax(dim=1)
    return probs if context is None else probs * context.unsqueeze(-1).to(probs.dtype)


def _inside(probs: torch.Tensor) -> torch.Tensor:
    started = probs[..., 0].cumsum(dim=1)
    not_ended = probs[..., 1].flip(1).cumsum(dim=1).flip(1)
    return started * not_ended


@torch.no_grad()
def answer_relevance(logits: torch.Tensor, valid: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, 2) start/end logits -> (B, N): the probability that each token lies inside the answer span, start and
    end independent over the ``valid`` tokens and the answer inside ``context`` (None: anywhere):
    P(start <= j) * P(end >= j)."""
    return _inside(_span_probs(logits, valid, context))


@torch.no_grad()
def answer_labels(
    logits: torch.Tensor, valid: torch.Tensor, k: int, context: torch.Tensor | None = None
) -> torch.Tensor:
    """Two-grade labels (B, N) for the ranking loss: 2 for the teacher's k most answer-relevant candidates, 1 for
    every other candidate, 0 for CLS and padding. The loss then pushes the likely answer region above all the rest
    (which the plan may drop) without asking for an order inside either group. A window where the teacher puts
    most of its start mass outside ``context`` (no answer in this window, SQuAD v2's unanswerable questions) gets
    no labels: its top-k would only be ties. Use with ``ranking_distillation_loss(..., per_pair=True)``."""
    candidates = valid.bool().clone()
    candidates[:, 0] = False
    probs = _span_probs(logits, valid, context)
    top = ranking_labels(_inside(probs), valid, k) > 0
    answerable = probs[..., 0].sum(dim=1, keepdim=True) >= 0.5
    return (top.float() + candidates.float()) * answerable
