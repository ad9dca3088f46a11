"""Embedding models in ONNX Runtime: the encoder and its pooling exported as one graph whose output is the
sentence embedding (pruned tokens removed inside the graph, as for every toprune export), served by
:meth:`toprune.serve.OnnxModel.encode`.

    folder = export_embedding_onnx(model, tokenizer, pooling, "exports/minilm-top")
    vectors = OnnxModel("exports/minilm-top").encode(["a sentence", "another one"])
"""

from __future__ import annotations

import torch
from torch import nn

from .embedding import Pooling, embed
from .runtime import pruning_state


class SentenceEmbedder(nn.Module):
    """An encoder (HF base model, pruned or not) with its pooling: ``forward`` returns ``sentence_embedding``."""

    def __init__(self, encoder: nn.Module, pooling: Pooling) -> None:
        super().__init__()
        self.encoder, self.pooling, self.config = encoder, pooling, encoder.config

    @property
    def base_model(self) -> nn.Module:  # where toprune finds the encoder layers and the pruning state
        return self.encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids=None) -> dict:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        return {"sentence_embedding": embed(self.encoder, batch, self.pooling, pruning_state(self.encoder))}


def export_embedding_onnx(model, tokenizer, pooling: Pooling, folder, **kwargs):
    """:func:`toprune.export.export_onnx` of the encoder with its pooling (parity-checked against PyTorch)."""
    from .export import export_onnx

    return export_onnx(SentenceEmbedder(model, pooling).eval(), tokenizer, folder, **kwargs)
