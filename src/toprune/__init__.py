"""toprune: ToP token pruning (constraint-aware, ranking-distilled) for BERT-family encoders, with real token removal.

The names below load on first use (PEP 562): ``import toprune.serve`` must not pull in torch or transformers.
"""

from __future__ import annotations

import importlib

from .errors import ToPruneError

__version__ = "0.1.0"

# public name -> (submodule, attribute)
_LAZY = {
    "DEFAULT_MODEL": ("pretrained", "DEFAULT_MODEL"),
    "EncoderDims": ("flops", "EncoderDims"),
    "FlopsReport": ("flops", "FlopsReport"),
    "HardConcreteGates": ("gates", "HardConcreteGates"),
    "PruningPlan": ("plan", "PruningPlan"),
    "SoftMasks": ("runtime", "SoftMasks"),
    "apply_pruning": ("runtime", "apply_pruning"),
    "batch_flops": ("flops", "batch_flops"),
    "default_pruning_layers": ("plan", "default_pruning_layers"),
    "encoder_macs": ("flops", "encoder_macs"),
    "expected_relative_macs": ("flops", "expected_relative_macs"),
    # Hugging Face habits: the same two calls under their usual names
    "from_pretrained": ("pretrained", "load_model"),
    "save_pretrained": ("pretrained", "save_pruned"),
    "load_model": ("pretrained", "load_model"),
    "load_tokenizer": ("pretrained", "load_tokenizer"),
    "pruning_state": ("runtime", "pruning_state"),
    "remove_pruning": ("runtime", "remove_pruning"),
    "resolve_model": ("pretrained", "resolve_model"),
    "save_pruned": ("pretrained", "save_pruned"),
}

__all__ = ["ToPruneError", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'toprune' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted([*globals(), *_LAZY])
