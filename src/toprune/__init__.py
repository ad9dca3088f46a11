"""toprune: ToP token pruning (constraint-aware, ranking-distilled) for BERT-family encoders, with real token removal.

The names below load on first use (PEP 562): ``import toprune.serve`` must not pull in torch or transformers.
"""

from __future__ import annotations

import importlib

from .errors import ToPruneError

__version__ = "0.1.0"

# public name -> (submodule, attribute); internals (gates, soft masks, cost models) stay in their submodules
_LAZY = {
    # load and save (pruned models are normal HF models plus toprune_plan.json)
    "load_model": ("pretrained", "load_model"),
    "load_tokenizer": ("pretrained", "load_tokenizer"),
    "save_pruned": ("pretrained", "save_pruned"),
    "DEFAULT_MODEL": ("pretrained", "DEFAULT_MODEL"),
    "resolve_model": ("pretrained", "resolve_model"),
    # Hugging Face habits: the same two calls under their usual names
    "from_pretrained": ("pretrained", "load_model"),
    "save_pretrained": ("pretrained", "save_pruned"),
    # the runtime and its plan
    "apply_pruning": ("runtime", "apply_pruning"),
    "remove_pruning": ("runtime", "remove_pruning"),
    "pruning_state": ("runtime", "pruning_state"),
    "PruningPlan": ("plan", "PruningPlan"),
    "ScoringSpec": ("plan", "ScoringSpec"),
    "default_pruning_layers": ("plan", "default_pruning_layers"),
    # training: the teacher, the pruner
    "finetune_teacher": ("finetune", "finetune_teacher"),  # not "finetune": that is the submodule's name
    "Pruner": ("pruner", "Pruner"),
    "PruneConfig": ("prune_config", "PruneConfig"),
    "prepare_data": ("train", "prepare_data"),
    "evaluate": ("train", "evaluate"),
    # FLOPs
    "EncoderDims": ("flops", "EncoderDims"),
    "FlopsReport": ("flops", "FlopsReport"),
    "batch_flops": ("flops", "batch_flops"),
    "encoder_macs": ("flops", "encoder_macs"),
    "expected_relative_macs": ("flops", "expected_relative_macs"),
    # serving
    "export_onnx": ("export", "export_onnx"),
    "OnnxModel": ("serve", "OnnxModel"),
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
