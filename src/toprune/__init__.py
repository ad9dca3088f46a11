"""toprune: ToP token pruning (constraint-aware, ranking-distilled) for BERT-family encoders, with real token removal."""

from .errors import ToPruneError
from .flops import EncoderDims, FlopsReport, batch_flops, encoder_macs, expected_relative_macs
from .gates import HardConcreteGates
from .plan import PruningPlan, default_pruning_layers
from .pretrained import DEFAULT_MODEL, load_model, load_tokenizer, resolve_model, save_pruned
from .runtime import SoftMasks, apply_pruning, pruning_state, remove_pruning

# Hugging Face habits: the same two calls under their usual names
from_pretrained = load_model
save_pretrained = save_pruned

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "EncoderDims",
    "FlopsReport",
    "HardConcreteGates",
    "PruningPlan",
    "SoftMasks",
    "ToPruneError",
    "apply_pruning",
    "batch_flops",
    "default_pruning_layers",
    "encoder_macs",
    "expected_relative_macs",
    "from_pretrained",
    "save_pretrained",
    "load_model",
    "load_tokenizer",
    "pruning_state",
    "remove_pruning",
    "resolve_model",
    "save_pruned",
]
