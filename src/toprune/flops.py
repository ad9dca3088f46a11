"""The FLOPs (MACs) model of the encoder (METHOD.md §5), from any config.

MACs of one layer with n tokens entering attention and n' entering the FFN:
    attention 4 n d^2 + n^2 (2 d + H)        FFN 2 n' d d_ff
Pruning at layer l physically happens between the attention and the FFN of layer l-1, so n' of layer l-1 is the
length entering layer l. Embeddings and task heads are not counted (they do not change with pruning).

Reductions are always reported two ways, labelled: against the dense model on *unpadded* inputs (the honest
figure: each example at its own length) and against the dense model *padded* to a fixed max length (the paper's
convention, which counts padding removal as savings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EncoderDims:
    num_layers: int
    hidden: int
    ffn: int
    heads: int

    fixed_cost = 0  # MACs outside the layers (embeddings, head) do not change with pruning: not counted

    def layer_cost(self, n_attn, n_ffn, prunes=None):
        """The constraint's cost interface (see :mod:`toprune.costmodel`): for FLOPs, a layer's MACs (``prunes``, the
        probability that the layer drops tokens, costs nothing in MACs)."""
        return layer_macs(self, n_attn, n_ffn)

    @classmethod
    def from_config(cls, config) -> "EncoderDims":
        # attribute_map makes hidden_size / num_attention_heads / num_hidden_layers work for DistilBERT too
        ffn = getattr(config, "intermediate_size", None) or config.hidden_dim
        return cls(int(config.num_hidden_layers), int(config.hidden_size), int(ffn), int(config.num_attention_heads))


def layer_macs(dims: EncoderDims, n_attn, n_ffn):
    """MACs of one layer; works on ints, floats and tensors (elementwise)."""
    d = dims.hidden
    return 4 * n_attn * d * d + n_attn * n_attn * (2 * d + dims.heads) + 2 * n_ffn * d * dims.ffn


def encoder_cost(cost, attn_counts, prunes=None):
    """Cost of the whole encoder given the tokens entering each layer's attention (length L, ints or tensors), for
    any cost model with ``num_layers``, ``layer_cost(n_attn, n_ffn, prunes)`` and ``fixed_cost``: MACs for
    :class:`EncoderDims`, measured milliseconds for :class:`toprune.costmodel.LatencyCost`.

    The FFN of layer l runs on the tokens entering layer l+1 (the last layer's FFN on its own attention count).
    ``prunes`` (length L, optional): whether layer l drops tokens (it pays the pruning overhead), e.g. a soft plan's
    probability; by default a layer drops iff its FFN runs on fewer tokens than its attention.
    """
    total = cost.fixed_cost
    for layer in range(cost.num_layers):
        n_ffn = attn_counts[layer + 1] if layer + 1 < cost.num_layers else attn_counts[layer]
        total = total + cost.layer_cost(attn_counts[layer], n_ffn, None if prunes is None else prunes[layer])
    return total


def dense_cost(cost, seq_len):
    return encoder_cost(cost, [seq_len] * cost.num_layers)


def encoder_macs(dims: EncoderDims, attn_counts):
    """MACs of the whole encoder given the tokens entering each layer's attention."""
    return encoder_cost(dims, attn_counts)


def dense_macs(dims: EncoderDims, seq_len):
    return dense_cost(dims, seq_len)


def expected_relative_macs(
    dims: EncoderDims,
    keep_ratios: torch.Tensor,
    pruning_layers,
    lengths: torch.Tensor,
    reference_lengths=None,
    prune_probs: torch.Tensor | None = None,
):
    """Expected pruned cost / dense cost (MACs for :class:`EncoderDims`, or any cost model of :func:`encoder_cost`),
    averaged over examples; differentiable in ``keep_ratios``.

    ``keep_ratios`` (P,) are the expected keep ratios of the pruning layers; an example of N real tokens has
    (N - 1) * R_l + 1 tokens at layer l, with R_l the cumulative product of the ratios up to l. The dense reference
    is each example at its own length (unpadded, the default) or ``reference_lengths`` (e.g. a padded max length).
    ``prune_probs`` (P,): the probability that each pruning layer drops tokens; the layer before it pays the cost
    model's pruning overhead in that proportion (see :meth:`toprune.costmodel.LatencyCost.layer_cost`).
    """
    lengths = lengths.to(keep_ratios.dtype)
    cumulative = torch.ones((), dtype=keep_ratios.dtype, device=keep_ratios.device)
    ratio_of_layer = dict(zip(pruning_layers, keep_ratios.unbind(0)))
    counts = []
    for layer in range(dims.num_layers):
        if layer in ratio_of_layer:
            cumulative = cumulative * ratio_of_layer[layer]
        counts.append((lengths - 1.0) * cumulative + 1.0)
    prunes = None
    if prune_probs is not None:
        prob_of_layer = dict(zip(pruning_layers, prune_probs.unbind(0)))
        prunes = [prob_of_layer.get(layer + 1, 0.0) for layer in range(dims.num_layers)]
    reference = lengths if reference_lengths is None else torch.as_tensor(reference_lengths, dtype=lengths.dtype)
    return (encoder_cost(dims, counts, prunes) / dense_cost(dims, reference)).mean()


@dataclass
class FlopsReport:
    """MACs of a real batch, pruned vs dense, both conventions labelled."""

    pruned_macs: float
    dense_unpadded_macs: float
    dense_padded_macs: float
    padded_length: int

    @property
    def reduction_unpadded(self) -> float:
        return self.dense_unpadded_macs / self.pruned_macs

    @property
    def reduction_padded(self) -> float:
        return self.dense_padded_macs / self.pruned_macs

    def __add__(self, other: "FlopsReport") -> "FlopsReport":
        return FlopsReport(
            self.pruned_macs + other.pruned_macs,
            self.dense_unpadded_macs + other.dense_unpadded_macs,
            self.dense_padded_macs + other.dense_padded_macs,
            max(self.padded_length, other.padded_length),
        )

    def summary(self) -> str:
        return (
            f"FLOPs reduction {self.reduction_unpadded:.2f}x vs dense unpadded, "
            f"{self.reduction_padded:.2f}x vs dense padded to {self.padded_length}"
        )


def batch_flops(dims: EncoderDims, attn_counts: torch.Tensor, padded_length: int) -> FlopsReport:
    """From per-example counts (B, L) of tokens entering each layer (as recorded by the pruned runtime)."""
    counts = attn_counts.to(torch.float64)
    per_layer = [counts[:, layer] for layer in range(dims.num_layers)]
    pruned = float(encoder_macs(dims, per_layer).sum())
    dense = float(dense_macs(dims, counts[:, 0]).sum())
    padded = float(dense_macs(dims, float(padded_length))) * counts.shape[0]
    return FlopsReport(pruned, dense, padded, padded_length)


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn, *args, **kwargs) -> tuple[int, dict]:
    """Run ``fn`` under ``torch.utils.flop_counter.FlopCounterMode``; returns (total FLOPs, per-module counts).

    PyTorch's counter has no formula for the fused CPU SDPA kernel (it would count attention as free); we pass
    the standard SDPA formula for it through the counter's public ``custom_mapping``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn(*args, **kwargs)
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module


def parse_target(text: str) -> float:
    """A FLOPs target as relative MACs (pruned / dense): "2.5x" is a 2.5x reduction, "0.6" a sparsity of 60%."""
    from .errors import ToPruneError

    try:
        if text.strip().lower().endswith("x"):
            factor = float(text.strip()[:-1])
            if not 1.0 <= factor < float("inf"):
                raise ValueError
            return 1.0 / factor
        sparsity = float(text)
        if not 0.0 <= sparsity < 1.0:  # also false for nan
            raise ValueError
        return 1.0 - sparsity
    except ValueError:
        raise ToPruneError(f"bad FLOPs target {text!r}: give a reduction like 2.5x or a sparsity in [0, 1)") from None


def min_relative_macs(dims: EncoderDims, pruning_layers, lengths, reference_length: int | None = None) -> float:
    """The smallest relative cost reachable when every pruning layer keeps only CLS (dense layers cap savings), as
    plans are judged: total pruned cost / total dense cost over the examples (not the mean of per-example ratios,
    which on short inputs understates what is reachable). ``reference_length``: dense padded to it."""
    first = min(pruning_layers)
    drops = [1.0 if layer == first - 1 else 0.0 for layer in range(dims.num_layers)]  # the CLS-only plan's
    pruned = dense = 0.0
    for n in (int(n) for n in lengths):
        pruned += float(encoder_cost(dims, [n] * first + [1] * (dims.num_layers - first), drops))
        dense += float(dense_cost(dims, n if reference_length is None else reference_length))
    return pruned / dense
