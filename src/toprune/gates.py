"""Hard-concrete (L0) gates: coarse layer gates and fine rank-bin masks (METHOD.md §4).

One :class:`HardConcreteGates` holds, for every pruning layer p, a layer-gate logit and K rank-bin logits.
Sampling is for training, :meth:`keep_probs` for the FLOPs constraint, :meth:`deterministic` for inference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TEMPERATURE = 2.0 / 3.0
STRETCH_LOW, STRETCH_HIGH = -0.1, 1.1
LOG_ALPHA_MIN, LOG_ALPHA_MAX = math.log(0.01), math.log(100.0)
# log(-low / high): P(z > 0) = sigmoid(log_alpha - TEMPERATURE * log(-low / high)) = sigmoid(log_alpha + (2/3) ln 11)
_NONZERO_SHIFT = TEMPERATURE * math.log(-STRETCH_LOW / STRETCH_HIGH)
# Initial logits: bins kept (P ~ 0.99). Layer gates start on [ours] (the authors: -3, P(on) ~ 0.2): off-start gates
# switch on one layer at a time, the first ones take the whole budget and are pruned to CLS while the others stay
# dense (benchmarks/README.md, "Gate collapse: diagnosis").
BIN_INIT, GATE_INIT = 3.0, 3.0


def hard_concrete_sample(log_alpha: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One reparameterised sample z in [0, 1] per logit (Louizos et al. 2018), differentiable in log_alpha."""
    # drawn on the CPU generator (reproducible, resumable), then moved: the same noise on any device
    u = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype).to(log_alpha.device)
    u = u.clamp(1e-6, 1.0 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / TEMPERATURE)
    return (s * (STRETCH_HIGH - STRETCH_LOW) + STRETCH_LOW).clamp(0.0, 1.0)


def prob_nonzero(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z > 0) of a hard-concrete gate with the given logit."""
    return torch.sigmoid(log_alpha - _NONZERO_SHIFT)


class HardConcreteGates(nn.Module):
    """Layer gates (P,) and rank-bin masks (P, K) for P pruning layers.

    ``monotone=True`` [ours, option] makes the kept bins always the top ones: sampled bin values are sorted so the
    best-ranked bins get the largest, and the deterministic mask keeps a prefix. A layer's rule is then simply
    "keep the top ceil(r * n) tokens". ``use_layer_gates=False`` is the "fine masks only" ablation: every pruning
    layer is on.
    """

    def __init__(
        self,
        num_pruning_layers: int,
        num_bins: int,
        bin_init: float = BIN_INIT,
        gate_init: float = GATE_INIT,
        monotone: bool = False,
        use_layer_gates: bool = True,
    ) -> None:
        super().__init__()
        self.num_bins = num_bins
        self.monotone = monotone
        self.use_layer_gates = use_layer_gates
        self.bin_log_alpha = nn.Parameter(torch.full((num_pruning_layers, num_bins), float(bin_init)))
        self.gate_log_alpha = nn.Parameter(torch.full((num_pruning_layers,), float(gate_init)))

    def sample(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(bins (P, K) in [0, 1], gates (P,) in {0, 1} with a straight-through gradient)."""
        bins = hard_concrete_sample(self.bin_log_alpha, generator)
        if self.monotone:
            bins = bins.sort(dim=1, descending=True).values
        if not self.use_layer_gates:
            return bins, torch.ones_like(self.gate_log_alpha)
        soft = hard_concrete_sample(self.gate_log_alpha, generator)
        hard = (soft > 0).to(soft.dtype)
        return bins, hard + soft - soft.detach()

    def keep_probs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(P(bin kept) (P, K), P(layer gate on) (P,))."""
        gates = prob_nonzero(self.gate_log_alpha)
        if not self.use_layer_gates:
            gates = torch.ones_like(gates)
        return prob_nonzero(self.bin_log_alpha), gates

    def expected_keep_ratios(self) -> torch.Tensor:
        """r_p = 1 - (1 - mean_b P(z_pb > 0)) * P(gate_p > 0), differentiable (METHOD.md §5)."""
        bins, gates = self.keep_probs()
        return 1.0 - (1.0 - bins.mean(dim=1)) * gates

    @torch.no_grad()
    def deterministic(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept bins bool (P, K), gate on bool (P,)) for inference (METHOD.md §4).

        Per layer, drop the round(K - sum_b P(z_b > 0)) bins with the smallest logits (monotone: the last ones);
        the gate is on iff P(gate > 0) >= 0.5.
        """
        bin_probs, gate_probs = self.keep_probs()
        num_drop = torch.round(self.num_bins - bin_probs.sum(dim=1)).long().clamp(0, self.num_bins)
        kept = torch.ones_like(bin_probs, dtype=torch.bool)
        for p in range(bin_probs.shape[0]):
            k = int(num_drop[p])
            if k == 0:
                continue
            if self.monotone:
                kept[p, self.num_bins - k :] = False
            else:
                kept[p, self.bin_log_alpha[p].argsort(stable=True)[:k]] = False
        return kept, gate_probs >= 0.5

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep every logit in [ln 0.01, ln 100], as the authors do after each optimiser step."""
        self.bin_log_alpha.clamp_(LOG_ALPHA_MIN, LOG_ALPHA_MAX)
        self.gate_log_alpha.clamp_(LOG_ALPHA_MIN, LOG_ALPHA_MAX)
