"""Find the pieces of a Hugging Face encoder that token pruning needs, through public modules only.

We never copy a modeling file. Each encoder layer is driven through its weight-named submodules (the names are
tied to checkpoint keys, so they are as stable as the checkpoints themselves):

* BERT, RoBERTa, ELECTRA, XLM-R (and MiniLM, which is a BERT): ``attention.self.{query,key,value}``,
  ``attention.output(ctx, residual)``, ``intermediate(h)`` and ``output(inter, residual)``.
* DistilBERT: ``attention.{q_lin,k_lin,v_lin,out_lin}``, ``sa_layer_norm``, ``ffn`` and ``output_layer_norm``.

Only the attention *core* (softmax(QK^T)V) is ours: SDPA where no scores are needed, an explicit softmax where the
pruning decision (or a ranking loss) needs the attention probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

import torch
from torch import nn

from .errors import ToPruneError


@dataclass(frozen=True)
class BlockParts:
    """What the pruned runtime needs from one encoder layer."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    num_heads: int
    attn_dropout: float
    attn_output: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (context, residual) -> hidden
    ffn: Callable[[torch.Tensor], torch.Tensor]  # hidden -> hidden (residual + norm included)


def _bert_like_parts(layer: nn.Module, num_heads: int) -> BlockParts:
    self_attn = layer.attention.self

    def ffn(h: torch.Tensor) -> torch.Tensor:
        return layer.output(layer.intermediate(h), h)

    return BlockParts(
        query=self_attn.query,
        key=self_attn.key,
        value=self_attn.value,
        num_heads=num_heads,
        attn_dropout=float(self_attn.dropout.p),
        attn_output=layer.attention.output,
        ffn=ffn,
    )


def _distilbert_parts(layer: nn.Module, num_heads: int) -> BlockParts:
    attn = layer.attention

    def attn_output(ctx: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return layer.sa_layer_norm(attn.out_lin(ctx) + residual)

    def ffn(h: torch.Tensor) -> torch.Tensor:
        return layer.output_layer_norm(layer.ffn(h) + h)

    return BlockParts(
        query=attn.q_lin,
        key=attn.k_lin,
        value=attn.v_lin,
        num_heads=num_heads,
        attn_dropout=float(attn.dropout.p),
        attn_output=attn_output,
        ffn=ffn,
    )


def base_model(model: nn.Module) -> nn.Module:
    """The bare encoder model (``BertModel``, ``RobertaModel``, ...) inside a task model, or the model itself."""
    return getattr(model, "base_model", model)


def find_encoder(model: nn.Module) -> nn.Module:
    """The module that owns the ``layer`` list: ``encoder`` (BERT family) or ``transformer`` (DistilBERT)."""
    base = base_model(model)
    for name in ("encoder", "transformer"):
        enc = getattr(base, name, None)
        if enc is not None and isinstance(getattr(enc, "layer", None), nn.ModuleList):
            return enc
    raise ToPruneError(
        f"unsupported model {type(model).__name__}: no encoder layer list found "
        "(supported: BERT, MiniLM, RoBERTa, ELECTRA, XLM-R, DistilBERT)"
    )


def block_parts(model: nn.Module) -> list[BlockParts]:
    """One :class:`BlockParts` per encoder layer, read from the loaded model's own modules."""
    config = model.config
    if getattr(config, "is_decoder", False):
        raise ToPruneError("token pruning needs a bidirectional encoder; this model is configured as a decoder")
    num_heads = int(config.num_attention_heads)
    parts = []
    for i, layer in enumerate(find_encoder(model).layer):
        if hasattr(layer, "attention") and hasattr(getattr(layer.attention, "self", None), "query"):
            parts.append(_bert_like_parts(layer, num_heads))
        elif hasattr(layer, "attention") and hasattr(layer.attention, "q_lin"):
            parts.append(_distilbert_parts(layer, num_heads))
        else:
            raise ToPruneError(f"unsupported encoder layer {type(layer).__name__} at index {i}")
    return parts
