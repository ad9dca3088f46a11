"""Sentence embeddings as a toprune task: pooling that follows the model's sentence-transformers config, the
embedding distillation loss, unlabelled training text, and the sentence-transformers folder of a pruned model.

The teacher is the dense embedding model itself: the student learns to reproduce its pooled embedding (no labels).
Which tokens a pruned model pools over (``Pooling.tokens``):

* ``"restored"``: every real token; a pruned token contributes the state it had when it was dropped (what the
  runtime's full-length output holds, so sentence-transformers' own ``Pooling`` computes it unchanged);
* ``"survivors"``: only the tokens that reached the last layer (a hook swaps the mask sentence-transformers
  pools with; see :func:`load_sentence_transformer`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import ToPruneError

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")
POOLING_TOKENS = ("restored", "survivors")
# "+tokens": every pooled token state (token_loss); "+relational": the batch's similarity structure (relational_loss)
LOSSES = ("cosine", "mse", "cosine+mse", "cosine+tokens", "cosine+relational")
# softmax temperature of relational_loss: sentence-transformers' MultipleNegativesRankingLoss scale 20 = 1 / 0.05
RELATIONAL_TEMPERATURE = 0.05
_OLD_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
_ST_TYPES = (
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
)


@dataclass(frozen=True)
class Pooling:
    mode: str = "mean"
    normalize: bool = False
    tokens: str = "restored"  # which tokens of a pruned model are pooled (module docstring)
    loss: str = "cosine"

    def __post_init__(self):
        for name, value, allowed in (
            ("pooling mode", self.mode, POOLING_MODES),
            ("pooling tokens", self.tokens, POOLING_TOKENS),
            ("embedding loss", self.loss, LOSSES),
        ):
            if value not in allowed:
                raise ToPruneError(f"unsupported {name} {value!r}: use one of {', '.join(allowed)}")


def read_pooling(folder, tokens: str = "restored", loss: str = "cosine") -> Pooling:
    """The pooling a sentence-transformers folder declares (modules.json, its Pooling config, a Normalize module);
    a plain HF folder gets mean pooling, as sentence-transformers gives it."""
    folder = Path(folder)
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except FileNotFoundError:
        return Pooling("mean", False, tokens, loss)
    except (OSError, json.JSONDecodeError) as exc:
        raise ToPruneError(f"cannot read {folder / 'modules.json'}: {exc}") from None
    types = [str(m.get("type", "")) for m in modules]
    pooling = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    mode = "mean"
    if pooling is not None:
        path = folder / pooling.get("path", "") / "config.json"
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ToPruneError(f"cannot read the pooling config {path}: {exc}") from None
        if "pooling_mode" in config:  # sentence-transformers >= 6 writes one string
            mode = str(config["pooling_mode"])
        else:
            modes = [name for key, name in _OLD_KEYS.items() if config.get(key)]
            others = [k for k, v in config.items() if k.startswith("pooling_mode") and v and k not in _OLD_KEYS]
            if len(modes) != 1 or others:
                raise ToPruneError(f"{path}: toprune pools with exactly one of {', '.join(POOLING_MODES)}")
            mode = modes[0]
    return Pooling(mode, any(t.endswith("Normalize") for t in types), tokens, loss)


def pool(hidden: torch.Tensor, weights: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(B, N, d) token states and (B, N) token weights (0/1 masks, or soft survival on the training path) ->
    (B, d) sentence embeddings."""
    w = weights.to(hidden.dtype).unsqueeze(-1)
    if pooling.mode == "cls":
        out = hidden[:, 0]
    elif pooling.mode == "max":
        out = hidden.masked_fill(w <= 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    else:
        total = (hidden * w).sum(dim=1)
        count = w.sum(dim=1).clamp(min=1e-9)
        out = total / (count if pooling.mode == "mean" else count.sqrt())
    return F.normalize(out, dim=-1) if pooling.normalize else out


def survivor_mask(state, mask: torch.Tensor) -> torch.Tensor:
    """(B, N) weights of the tokens that reached the last layer in the state's last forward: on the soft (training)
    path the product of the keep values (differentiable in the gates), on the gather path the recorded positions
    (``state.record`` must have been on), or a merging plan's sizes (each survivor weighs the tokens merged into
    it). The real-token mask when nothing was pruned."""
    mask = mask.to(torch.float32)
    last = None if state is None else state.last
    if last is None:
        return mask
    if state.soft_masks is not None and last.keep:
        weight = mask
        for keep in last.keep.values():
            weight = weight * keep.to(mask.device, mask.dtype)
        return weight
    if last.sizes is not None:  # merged survivors weigh as many tokens as they stand for
        return last.sizes.to(mask.device, mask.dtype) * mask
    if not last.positions:
        if state.plan.kept_bins:
            raise ToPruneError("survivor pooling needs the token positions: set state.record = True first")
        return mask
    final = last.positions[-1].to(mask.device)  # (B, M) original positions, -1 for padding
    alive = torch.zeros(mask.shape[0], mask.shape[1] + 1, device=mask.device)
    alive.scatter_(1, torch.where(final >= 0, final, mask.shape[1]), 1.0)
    return alive[:, :-1] * mask


def embed(model, batch: dict, pooling: Pooling, state=None) -> torch.Tensor:
    """Pooled embeddings of a tokenised batch. ``state`` is the model's pruning state (``pruning_state(model)``;
    passed explicitly when ``model`` is wrapped, e.g. by DDP)."""
    return pool(*token_states(model, batch, pooling, state), pooling)


def token_states(model, batch: dict, pooling: Pooling, state=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, d) last-layer states (a pruned token: its state when dropped) and the (B, N) weights the pooling
    gives them (the real-token mask, or the survivors')."""
    survivors = pooling.tokens == "survivors" and state is not None
    record = None if state is None else state.record
    if survivors:
        state.record = True  # the gather path records the survivors' positions only when asked
    try:
        hidden = model(**batch).last_hidden_state
    finally:
        if state is not None:
            state.record = record
    mask = batch["attention_mask"]
    return hidden, (survivor_mask(state, mask) if survivors else mask)


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """``cosine``: mean (1 - cos); ``mse``: mean squared L2 distance (per example, summed over dimensions: on unit
    vectors it is 2 (1 - cos)); ``cosine+mse``: their sum; ``cosine+tokens``: the cosine term here, the token term
    added by :func:`distill_embedding`; ``cosine+relational``: plus :func:`relational_loss`."""
    teacher = teacher.detach()
    cosine = (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if kind == "cosine+relational":
        return cosine + relational_loss(student, teacher)
    mse = (student - teacher).pow(2).sum(dim=-1).mean()
    return {"cosine": cosine, "mse": mse, "cosine+mse": cosine + mse, "cosine+tokens": cosine}[kind]


def relational_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = RELATIONAL_TEMPERATURE):
    """KL divergence between each text's softmax similarities to the batch's *teacher* embeddings, as the teacher
    sees them and as the student sees them. Why it exists: retrieval and STS rank texts against each other, and a
    pooled-cosine loss pays mostly for the direction texts share, this one for what tells them apart; measured, it
    ends level with plain cosine (one seed, benchmarks/README.md section 11), so cosine stays the default."""
    teacher = F.normalize(teacher.detach(), dim=-1)
    student = F.normalize(student, dim=-1)
    target = (teacher @ teacher.T / temperature).softmax(dim=-1)
    log_probs = (student @ teacher.T / temperature).log_softmax(dim=-1)
    return F.kl_div(log_probs, target, reduction="batchmean")


def token_loss(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Relative squared error of the pooled token states against the dense teacher's last-layer states at the same
    positions, sum ||s - t||^2 / sum ||t||^2 over the weighted tokens (scale-free). Why: one pooled vector per text
    is a weak signal for a model whose tokens leave at different depths; when every pooled state matches the
    teacher's, so does their mean."""
    w = weights.to(student.dtype).unsqueeze(-1)
    teacher = teacher.detach()
    return ((student - teacher).pow(2) * w).sum() / (teacher.pow(2) * w).sum().clamp(min=1e-9)


def distill_embedding(student, teacher, batch: dict, pooling: Pooling, state) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedding task's distillation loss of one batch and the teacher's embeddings."""
    hidden, weights = token_states(student, batch, pooling, state)
    with torch.no_grad():
        dense = teacher(**batch).last_hidden_state
    target = pool(dense, batch["attention_mask"], pooling)
    loss = embedding_loss(pool(hidden, weights, pooling), target, pooling.loss)
    if pooling.loss.endswith("+tokens"):
        loss = loss + token_loss(hidden, dense, weights)
    return loss, target


# -- unlabelled text --------------------------------------------------------------------------------------------
def _unique(texts) -> list[str]:
    seen = dict.fromkeys(t.strip() for t in texts if isinstance(t, str) and t.strip())
    return list(seen)


def load_texts(source: str, data_dir=None, column: str | None = None) -> list[str]:
    """Unique non-empty texts, in file order, of one source or several joined by ``+``: ``glue:TASK`` (the
    training sentences of a local GLUE task, both sides of pairs), ``squad:FILE.json`` (paragraphs and questions
    of its training articles; ``squad-paragraphs:FILE.json``: the paragraphs alone, the side a corpus encoder
    prunes), a ``.txt`` file (one text a line), or a CSV/TSV/JSON Lines column (``column``, else
    ``text`` or ``sentence``, else the only column)."""
    if "+" in source and not Path(source).exists():
        return _unique(t for part in source.split("+") for t in load_texts(part, data_dir, column))
    if source.startswith(("squad:", "squad-paragraphs:")):  # a SQuAD file's training articles, never the held-out
        from .embedding_eval import squad_training_texts

        kind, _, path = source.partition(":")
        return squad_training_texts(path, questions=kind == "squad")
    if source.startswith("glue:"):
        from .data import load_glue_split

        rows = load_glue_split(data_dir, source[5:], "train")
        return _unique([t for name in ("text_a", "text_b") if name in rows.column_names for t in rows[name]])
    path = Path(source)
    if path.suffix.lower() == ".txt":
        try:
            texts = _unique(path.read_text(encoding="utf-8-sig").splitlines())
        except (OSError, UnicodeDecodeError) as exc:
            raise ToPruneError(f"cannot read {path}: {exc}") from None
    else:
        from .userdata import read_table

        table = read_table(path)
        names = table.column_names
        name = column or next((c for c in ("text", "sentence") if c in names), names[0] if len(names) == 1 else None)
        if name not in names:
            raise ToPruneError(f"{path}: name the text column (--text-columns); columns are {', '.join(names)}")
        texts = _unique(table[name])
    if not texts:
        raise ToPruneError(f"{source} holds no text")
    return texts


def prepare_embedding(
    tokenizer,
    source: str,
    data_dir=None,
    max_length: int = 128,
    max_train_samples: int | None = None,
    seed: int = 57,
    column: str | None = None,
    pooling: Pooling | None = None,
):
    """A :class:`toprune.train.TaskData` of kind "embedding": tokenised unlabelled texts, a held-out slice for
    checkpoint selection and another one as "dev" (metric: mean cosine to the dense teacher's embedding, x100;
    the teacher's embeddings are added by :func:`attach_teacher_embeddings`)."""
    from datasets import Dataset

    from .selection import Selection, split_heldout
    from .train import TaskData

    texts = Dataset.from_dict({"text": load_texts(source, data_dir, column)})
    train, dev = split_heldout(texts)
    train, selection = split_heldout(train)
    info = Selection("heldout", len(selection), len(train))
    if max_train_samples and max_train_samples < len(train):
        train = train.shuffle(seed=seed).select(range(max_train_samples))

    def tokenise(split):
        return split.map(
            lambda rows: tokenizer(rows["text"], truncation=True, max_length=max_length),
            batched=True,
            remove_columns=["text"],
            desc="tokenising",
        )

    return TaskData(
        "embedding",
        "teacher_cosine",
        None,
        tokenise(train),
        tokenise(dev),
        dev.rename_column("text", "text_a"),
        kind="embedding",
        selection=tokenise(selection),
        selection_info=info,
        embedding=pooling or Pooling(),
        source={"texts": source},
    )


def attach_teacher_embeddings(data, teacher, tokenizer, batch_size: int = 64) -> None:
    """Add the dense teacher's embedding of every selection and dev example as a ``teacher_embedding`` column."""
    for name in ("selection", "dev"):
        split = getattr(data, name)
        if split is None or "teacher_embedding" in split.column_names:
            continue
        rows = []  # from the stored ids, one padded batch at a time
        for start in range(0, len(split), batch_size):
            chunk = [{"input_ids": ids} for ids in split["input_ids"][start : start + batch_size]]
            batch = tokenizer.pad(chunk, return_tensors="pt").to(next(teacher.parameters()).device)
            with torch.no_grad():
                rows += embed(teacher.eval(), dict(batch), data.embedding).float().cpu().tolist()
        setattr(data, name, split.add_column("teacher_embedding", rows))


def agreement(model, inputs: dict, targets: dict, pooling: Pooling, state) -> torch.Tensor:
    """Per-example cosine between the model's embedding and the teacher's (the selection metric)."""
    emb = embed(model, inputs, pooling, state).float()
    return F.cosine_similarity(emb, targets["teacher_embedding"].float().to(emb.device), dim=-1).cpu()


# -- sentence-transformers folders --------------------------------------------------------------------------------
def save_sentence_transformer(model, folder, tokenizer, pooling: Pooling, source=None) -> Path:
    """Save a (pruned) encoder as a folder ``SentenceTransformer`` loads: HF weights, tokenizer, plan (with the
    pooling tokens in its meta), modules.json and the Pooling config; ``sentence_bert_config.json`` is copied from
    ``source`` when it has one."""
    from .pretrained import save_pruned
    from .runtime import pruning_state

    state = pruning_state(model)
    if state is not None:
        state.plan.meta = {**state.plan.meta, "pooling_tokens": pooling.tokens}
    folder = save_pruned(model, folder, tokenizer)
    names = ["", "1_Pooling"] + (["2_Normalize"] if pooling.normalize else [])
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": kind} for i, (path, kind) in enumerate(zip(names, _ST_TYPES))
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    config = {
        "word_embedding_dimension": model.config.hidden_size,
        **{key: name == pooling.mode for key, name in _OLD_KEYS.items()},
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if source is not None and Path(source, "sentence_bert_config.json").is_file():
        shutil.copyfile(Path(source, "sentence_bert_config.json"), folder / "sentence_bert_config.json")
    return folder


def load_sentence_transformer(folder, device: str | None = None):
    """``SentenceTransformer(folder)`` whose ``encode()`` runs pruned (the folder's plan, see
    :func:`prune_sentence_transformer`); a folder without a plan loads dense."""
    from sentence_transformers import SentenceTransformer

    from .plan import PLAN_FILENAME, PruningPlan

    st = SentenceTransformer(str(folder), device=device)
    if Path(folder, PLAN_FILENAME).is_file():
        plan = PruningPlan.load(folder, num_layers=st[0].auto_model.config.num_hidden_layers)
        prune_sentence_transformer(st, plan)
    return st


def prune_sentence_transformer(st, plan, tokens: str | None = None):
    """Apply ``plan`` to a loaded ``SentenceTransformer`` in place. ``toprune.apply_pruning(st[0].auto_model, plan)``
    alone is not enough: sentence-transformers calls the HF model's ``forward`` directly, past the hook that
    captures the padding mask, so hooks on its Transformer module hand the mask over instead; with survivor
    pooling (``tokens``, default the plan's ``pooling_tokens``) its Pooling gets the survivors as its mask."""
    from .runtime import apply_pruning

    state = apply_pruning(st[0].auto_model, plan)
    tokens = tokens or plan.meta.get("pooling_tokens", "restored")
    Pooling(tokens=tokens)  # checks the name
    module = st[0]
    for handle in getattr(module, "_toprune_handles", ()):
        handle.remove()

    def capture(module, args):
        features = args[0]
        state.input_mask = features.get("attention_mask")
        state.input_segments = features.get("token_type_ids")
        state.hidden_states = None
        state.record = tokens == "survivors"  # the gather path records survivors' positions only when asked

    def release(module, args, features):
        state.input_mask = state.input_segments = None
        if tokens == "survivors":
            mask = features["attention_mask"]
            features["attention_mask"] = survivor_mask(state, mask).to(mask.dtype)
        return features

    module._toprune_handles = [module.register_forward_pre_hook(capture), module.register_forward_hook(release)]
    return st
