"""Quantisation-aware fine-tuning for the INT8 graph [ours] (issue 21: pruning must stack with INT8).

ONNX Runtime's dynamic INT8 computes every weight MatMul as uint8 activations (scale and zero point from the
tensor's own min and max, at every call) times int8 weights (symmetric; one scale per output channel in the
``per_channel`` variant, else one per tensor). A pruned model loses more to that rounding than the dense one: the
rounded attention decides differently which tokens survive (benchmarks/README.md, section 9). :func:`fake_int8`
makes every ``nn.Linear`` of the encoder compute the same rounding in float, with straight-through gradients, so a
fine-tuning under its fixed plan learns to be accurate with the selection the served graph will make. A patch in
the style of the runtime: one call, undone by the function it returns; weights and state dict keys are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

QMIN_ACT, QMAX_ACT = 0, 255  # ORT DynamicQuantizeLinear: uint8, asymmetric, the range always covers 0
QMAX_WEIGHT = 127  # int8 symmetric weights: [-127, 127]


def fake_quantize_activation(x: torch.Tensor) -> torch.Tensor:
    """x rounded as ORT's DynamicQuantizeLinear rounds it (per tensor, per call); straight-through gradient."""
    lo = x.detach().min().clamp(max=0.0)
    hi = x.detach().max().clamp(min=0.0)
    scale = ((hi - lo) / QMAX_ACT).clamp(min=1e-12).float()
    zero_point = torch.round(-lo / scale).clamp(QMIN_ACT, QMAX_ACT).to(torch.int32)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, QMIN_ACT, QMAX_ACT)


def fake_quantize_weight(weight: torch.Tensor, per_channel: bool = True) -> torch.Tensor:
    """An ``nn.Linear`` weight (out, in) rounded to symmetric int8, one scale per output channel (or per tensor)."""
    absmax = weight.detach().abs().amax(dim=1) if per_channel else weight.detach().abs().amax().expand(weight.shape[0])
    scale = (absmax / QMAX_WEIGHT).clamp(min=1e-12).float()
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -QMAX_WEIGHT, QMAX_WEIGHT)


def fake_int8(model: nn.Module, per_channel: bool = True):
    """Make every ``nn.Linear`` of the model's encoder layers compute as the dynamic INT8 graph will; returns
    ``undo()``. The pooler and the head stay float, as in the served graph (the quantiser leaves their Gemm nodes)."""
    from .adapters import find_encoder

    linears = [m for m in find_encoder(model).modules() if isinstance(m, nn.Linear)]

    def int8_forward(module: nn.Linear):
        def forward(x):
            weight = fake_quantize_weight(module.weight, per_channel)
            return F.linear(fake_quantize_activation(x), weight, module.bias)

        return forward

    for module in linears:
        module.forward = int8_forward(module)  # an instance attribute: the class's forward is untouched

    def undo() -> None:
        for module in linears:
            module.__dict__.pop("forward", None)

    return undo
