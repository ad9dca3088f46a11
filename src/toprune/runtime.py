"""The pruned encoder runtime: patch a loaded HF model so its encoder removes tokens layer by layer.

``apply_pruning(model, plan)`` swaps the encoder's ``forward`` for ours (on the instance, ToMe style) and adds a
pre-hook on the base model that captures the 2-D padding mask; ``remove_pruning(model)`` undoes both. Weights,
state-dict keys, embeddings and task heads are untouched, so the model stays a normal HF model (``save_pretrained``,
classification and QA heads, losses all work).

Two paths:
* **gather** (inference, default): at each pruning layer the survivors are gathered, so later layers really run on
  fewer tokens. Each example keeps its own count; the batch is re-padded only to its longest survivor list. The drop
  happens between the attention and the FFN of the previous layer (the scores come from that attention), so the
  FFN already runs on the survivors. Dropped tokens' states are stashed and scattered back at their original
  positions at the end: token-level heads see a full-length sequence in the original order.
* **soft** (training): nothing is removed; hidden states entering pruning layer l are scaled by
  keep_j = 1 - (1 - z_bin(j)) * g (METHOD.md §4), tokens whose keep is 0 leave the attention (as they would at
  inference), and the output of a token at its death is its post-attention state, as in the gather path.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions as EncoderOutput

from .adapters import BlockParts, base_model, block_parts, find_encoder
from .errors import ToPruneError
from .merging import attention_bias, merge_into_survivors
from .plan import PruningPlan, kept_ranks
from .scoring import question_rows, rank_bins, score_rows, self_attention, spread_scores, token_scores
from .strategies import Scorer, ScoreView, custom_scorer, scorer_class
from .survivors import bin_table, keep_at_slots, rank_keep, survivor_slots


@dataclass
class SoftMasks:
    """Sampled (or deterministic) mask values for the soft path: bins (P, K) and gates (P,) of ``layers``."""

    layers: list[int]
    bins: torch.Tensor
    gates: torch.Tensor


@dataclass
class ForwardRecord:
    """What the last forward saw, for losses and FLOPs: per-layer scores, keep values, token counts."""

    scores: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, N) scores, original positions
    scored: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, N) bool: who had a score there
    keep: dict[int, torch.Tensor] = field(default_factory=dict)  # soft path: pruning layer -> (B, N) keep values
    attn_counts: torch.Tensor | None = None  # gather path: (B, L) tokens entering each layer, per example
    computed_lengths: list[int] = field(default_factory=list)  # gather path: padded length run at each layer
    positions: list[torch.Tensor] = field(default_factory=list)  # gather path: original positions entering each layer
    sizes: torch.Tensor | None = None  # merging plans: (B, N) input tokens each survivor stands for, 0 elsewhere


class PruningState:
    """Everything the patched encoder needs; a plain object (not a Module), so it never enters the state dict."""

    def __init__(self, parts: list[BlockParts], plan: PruningPlan) -> None:
        self.parts = parts
        self.plan = plan
        self.score_layers: set[int] = set()  # extra layers whose scores are recorded (ranking distillation)
        self.force_scoring = False  # score at pruning layers even when nothing is dropped (to measure its cost)
        self.record = False  # record token counts per layer (FLOPs of real batches)
        self.traceable = False  # for ONNX export: no data-dependent Python branches (always the masked path)
        self.restore = True  # scatter dropped tokens back at the end; off: the survivors, CLS first (first-row heads)
        self.rank_table_size: int | None = None  # export: the longest input; survivors read from a table that size
        self.soft_masks: SoftMasks | None = None
        self.random_scores: torch.Generator | None = None  # plans scored "random": drop random tokens
        # of the current call only (captured by a pre-hook on the base model, cleared by its forward hook)
        self.input_mask: torch.Tensor | None = None
        self.input_segments: torch.Tensor | None = None  # token_type_ids (question scorer)
        self.hidden_states: list[torch.Tensor] | None = None  # output_hidden_states=True: full-length, per layer
        self.question_scores = False  # plans scored "question": attention received from question rows
        self.value_scores = False  # plans scored "value": attention received, weighted by the value norms
        self.scorer: Scorer | None = None  # plans scored by a registered scorer of one's own: it ranks the tokens
        self.last: ForwardRecord | None = None
        self.handles: list = []
        self.set_plan(plan)

    def set_plan(self, plan: PruningPlan) -> None:
        plan.validate(len(self.parts))
        self.plan = plan
        scoring = plan.scoring
        if scoring.kind != getattr(self.scorer, "kind", None):  # the same kind keeps its object (and its state)
            self.scorer = custom_scorer(scoring.kind)
        traits = scorer_class(scoring.kind)
        self.question_scores = traits.by_question
        self.value_scores = traits.by_value  # attention weighted by the value norms (scoring.token_scores)
        self.score_radius = scoring.radius  # [ours] spread scores before ranking
        self.merge = scoring.merge  # [ours] removed tokens merged into survivors (toprune.merging)
        # the seed the run evaluated with: reloads score the same (a generator already set keeps drawing)
        random = scoring.kind == "random"
        self.random_scores = (self.random_scores or torch.Generator().manual_seed(scoring.seed)) if random else None
        self.tables = {layer: bin_table(bins) for layer, bins in plan.kept_bins.items()}  # layer -> (K + 1,) bool
        self._kept_ranks: dict[tuple[int, int], torch.Tensor] = {}

    def kept_ranks(self, layer: int, m: int, device) -> torch.Tensor:
        """Rank positions (0 = best) kept at ``layer`` among m candidates: cached, they depend on m only."""
        key = (layer, m)
        if key not in self._kept_ranks:
            ranks = kept_ranks(self.plan.kept_bins[layer], m, self.plan.min_tokens)
            self._kept_ranks[key] = torch.tensor(ranks, dtype=torch.long)
        return self._kept_ranks[key].to(device)


def _flat_rows(index: torch.Tensor, length: int) -> torch.Tensor:
    """Row numbers, in a (B, length, d) tensor viewed as (B * length, d), of per-example slot indices (B, M)."""
    return (index + torch.arange(index.shape[0], device=index.device).unsqueeze(1) * length).reshape(-1)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b]]`` for every example: (B, N, d), (B, M) -> (B, M, d). One ``index_select`` on the flattened
    batch: on the CPU several times faster than ``gather`` with an index expanded over d (which reads that index,
    B*M*d int64s, for every element copied)."""
    bsz, n, dim = x.shape
    return x.reshape(bsz * n, dim).index_select(0, _flat_rows(index, n)).view(bsz, index.shape[1], dim)


def scatter_rows_(dest: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """In place ``dest[b, index[b]] = src[b]``, the inverse of :func:`gather_rows` (one ``index_copy_``). Where
    ``index`` repeats a slot (the padding sink), which write wins is unspecified: callers discard that slot."""
    bsz, n, dim = dest.shape
    dest.view(bsz * n, dim).index_copy_(0, _flat_rows(index, n), src.reshape(-1, dim))
    return dest


def _select_unpadded(state: PruningState, layer: int, scores: torch.Tensor) -> torch.Tensor:
    """Survivor indices (original order, CLS first) for a batch without padding: every example has the same
    number of candidates, so the kept rank positions are one cached index (the fast path of batch 1)."""
    bsz, n = scores.shape
    ranks = state.kept_ranks(layer, n - 1, scores.device)
    order = scores[:, 1:].argsort(dim=1, descending=True, stable=True)
    kept = order.index_select(1, ranks).sort(dim=1).values + 1
    return torch.cat([kept.new_zeros(bsz, 1), kept], dim=1)


def _longest(n_keep: torch.Tensor, current: int, traceable: bool):
    """The longest survivor list of the batch: a Python int, or when exporting an unbounded symbolic size with the
    bounds the exporter needs to know (at least CLS survives, never more than were there)."""
    if not traceable:
        return int(n_keep.max())
    longest = n_keep.max().item()
    torch._check(longest >= 1)
    torch._check(longest <= current)
    return longest


def _question_rows(state: PruningState, valid: torch.Tensor) -> torch.Tensor | None:
    if not state.question_scores:
        return None
    segments = state.input_segments
    if segments is not None and segments.shape != valid.shape:
        raise ToPruneError(
            f"token_type_ids of shape {tuple(segments.shape)} do not match input of shape {tuple(valid.shape)}"
        )
    return question_rows(None if segments is None else segments.to(valid.device), valid)


def _scores(state: PruningState, layer: int, probs, values, hidden, query_mask, valid, positions) -> torch.Tensor:
    """Each slot's score at ``layer``: the attention it receives from the ``query_mask`` rows, or what the plan's
    registered scorer says (its view is built only then: the built-in path and exported graphs are unchanged)."""
    if state.scorer is None:
        return token_scores(probs, query_mask, values.norm(dim=-1) if state.value_scores else None)
    return state.scorer.token_scores(ScoreView(layer, probs, hidden, query_mask, valid, positions))


def _at_positions(scores: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, seq: int):
    """Survivors' scores (B, n) -> (B, seq) at their original positions (0 elsewhere, differentiable), and the
    (B, seq) mask of the positions that were scored."""
    slots = torch.where(valid, positions, seq)
    full = scores.new_zeros(scores.shape[0], seq + 1).scatter(1, slots, scores)[:, :seq]
    scored = torch.zeros(scores.shape[0], seq + 1, dtype=torch.bool, device=scores.device)
    return full, scored.scatter(1, slots, True)[:, :seq]


def _gather_forward(state: PruningState, hidden: torch.Tensor, valid: torch.Tensor, training: bool) -> torch.Tensor:
    bsz, seq, dim = hidden.shape
    record = ForwardRecord()
    positions = torch.arange(seq, device=hidden.device).expand(bsz, seq)
    key_mask = valid if state.traceable or not bool(valid.all()) else None
    rows = _question_rows(state, valid)  # gathered with the survivors, like their positions
    sizes = None  # merging plans: how many input tokens each slot stands for
    stash = None
    restore = state.restore or state.hidden_states is not None
    counts = []
    for i, parts in enumerate(state.parts):
        table = state.tables.get(i + 1)
        prune_next = table is not None
        random = prune_next and state.random_scores is not None
        need = (
            (prune_next and not random)
            or i in state.score_layers
            or (state.force_scoring and (i + 1) < len(state.parts))
        )
        # exported graphs use the explicit attention everywhere: SDPA's shape checks cannot take a symbolic length
        bias = attention_bias(sizes)
        context, probs, values = self_attention(parts, hidden, key_mask, need or state.traceable, training, bias)
        hidden = parts.attn_output(context, hidden)
        if state.record:
            counts.append(valid.sum(dim=1))
            record.computed_lengths.append(hidden.shape[1])
            record.positions.append(torch.where(valid, positions, -1))
        scores = None
        if need:
            scores = _scores(state, i, probs, values, hidden, score_rows(rows, key_mask), valid, positions)
        if i in state.score_layers:  # at original positions: losses compare them with full-length targets
            record.scores[i], record.scored[i] = _at_positions(scores, positions, valid, seq)
        if random:  # the floor baseline: the same counts, random survivors (drawn on the CPU: reproducible)
            scores = torch.rand(hidden.shape[:2], generator=state.random_scores).to(hidden.device)
        elif prune_next and state.score_radius:
            scores = spread_scores(scores, state.score_radius, positions, seq)
        if prune_next and key_mask is None:
            # no padding: same survivor count for every example, a handful of ops instead of the masked path
            if restore:
                stash = hidden.new_zeros(bsz, seq + 1, dim) if stash is None else stash
                scatter_rows_(stash, positions, hidden)  # survivors are overwritten later
            order = _select_unpadded(state, i + 1, scores)
            if state.merge:
                survivors = torch.zeros_like(valid).scatter(1, order, True)
                hidden, sizes = merge_into_survivors(hidden, survivors, valid, sizes)
            hidden = gather_rows(hidden, order)
            sizes = None if sizes is None else sizes.gather(1, order)
            positions = positions.gather(1, order)
            rows = None if rows is None else rows.gather(1, order)
            valid = torch.ones_like(order, dtype=torch.bool)
        elif prune_next:
            # CLS survives; the others by rank bin (rank order throughout: few ops in exported graphs)
            bins = state.plan.kept_bins[i + 1]
            order, kept = rank_keep(
                scores, valid, bins, not state.traceable, state.rank_table_size, table, state.plan.min_tokens
            )
            if restore:  # slot `seq` of the stash is a sink for padding writes
                stash = hidden.new_zeros(bsz, seq + 1, dim) if stash is None else stash
                scatter_rows_(stash, torch.where(valid & ~keep_at_slots(order, kept), positions, seq), hidden)
            if state.merge:
                hidden, sizes = merge_into_survivors(hidden, valid & keep_at_slots(order, kept), valid, sizes)
            n_keep = kept.sum(dim=1)
            new_len = _longest(n_keep, hidden.shape[1], state.traceable)
            order = survivor_slots(order, kept, new_len, not state.traceable)  # original order, cut to new_len
            hidden = gather_rows(hidden, order)
            sizes = None if sizes is None else sizes.gather(1, order)
            positions = positions.gather(1, order)
            rows = None if rows is None else rows.gather(1, order)
            valid = torch.arange(new_len, device=hidden.device) < n_keep.unsqueeze(1)
            key_mask = valid if state.traceable or not bool((n_keep == new_len).all()) else None
        hidden = parts.ffn(hidden)
        if state.hidden_states is not None and i + 1 < len(state.parts):  # the last one is the output itself
            state.hidden_states.append(_full_length(stash, hidden, valid, positions, seq))
    if state.record:
        record.attn_counts = torch.stack(counts, dim=1)
    if sizes is not None:  # at original positions (padding and removed tokens 0): survivor pooling weighs by them
        slots = torch.where(valid, positions, seq)
        record.sizes = sizes.new_zeros(bsz, seq + 1).scatter(1, slots, sizes * valid)[:, :seq]
    state.last = record
    if stash is None:
        return hidden
    scatter_rows_(stash, torch.where(valid, positions, seq), hidden)
    return stash[:, :seq]


def _full_length(stash, hidden, valid, positions, seq: int) -> torch.Tensor:
    """A layer's output at full length: survivors at their original positions, dropped tokens with their state at
    removal (as in the final output), padding zero."""
    if stash is None:
        return hidden
    return scatter_rows_(stash.clone(), torch.where(valid, positions, seq), hidden)[:, :seq]


def _soft_forward(state: PruningState, hidden: torch.Tensor, valid: torch.Tensor, training: bool) -> torch.Tensor:
    masks = state.soft_masks
    index_of = {layer: p for p, layer in enumerate(masks.layers)}
    record = ForwardRecord()
    alive = valid
    is_cls = torch.zeros_like(valid)
    is_cls[:, 0] = True
    rows = _question_rows(state, valid)
    slots = None if state.scorer is None else torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
    frozen = None
    for i, parts in enumerate(state.parts):
        p = index_of.get(i + 1)
        need = p is not None or i in state.score_layers
        key_mask = None if bool(alive.all()) else alive
        context, probs, values = self_attention(parts, hidden, key_mask, need, training)
        after_attn = parts.attn_output(context, hidden)
        scores = _scores(state, i, probs, values, after_attn, score_rows(rows, alive), alive, slots) if need else None
        if i in state.score_layers:
            record.scores[i], record.scored[i] = scores, valid  # a dead token scores 0 here
        hidden = parts.ffn(after_attn)
        if p is None:
            continue
        candidates = alive & ~is_cls
        num_bins = masks.bins.shape[1]
        ranked = spread_scores(scores.detach(), state.score_radius)  # slots = original positions here
        bins = rank_bins(ranked, candidates, num_bins).clamp(max=num_bins - 1)
        keep = 1.0 - (1.0 - masks.bins[p][bins]) * masks.gates[p]
        keep = torch.where(candidates, keep, is_cls.to(keep.dtype))
        dying = alive & (keep <= 0)
        if frozen is None:
            frozen = torch.zeros_like(after_attn)
        frozen = torch.where(dying.unsqueeze(-1), after_attn, frozen)
        hidden = hidden * keep.unsqueeze(-1).to(hidden.dtype)
        alive = keep > 0
        record.keep[i + 1] = keep
    state.last = record
    return hidden if frozen is None else torch.where(alive.unsqueeze(-1), hidden, frozen)


def _pruned_encoder_forward(self, hidden_states=None, *args, **kwargs):
    """Replaces the encoder's forward; extra HF arguments (4-D masks, caches, flags) are not needed and ignored."""
    state: PruningState = self._toprune_state
    if hidden_states is None:
        hidden_states = kwargs.get("x")
    bsz, seq, _ = hidden_states.shape
    mask = state.input_mask
    if mask is None:
        valid = torch.ones(bsz, seq, dtype=torch.bool, device=hidden_states.device)
    elif mask.shape != (bsz, seq):
        raise ToPruneError(f"attention_mask of shape {tuple(mask.shape)} does not match input of shape {(bsz, seq)}")
    else:
        valid = mask.to(device=hidden_states.device, dtype=torch.bool)
    training = self.training
    if state.hidden_states is not None:
        state.hidden_states.append(hidden_states)  # the embeddings' output
    if state.soft_masks is not None:
        if state.hidden_states is not None:
            raise ToPruneError("output_hidden_states is not available on the soft (training) path")
        if state.merge:
            raise ToPruneError("merging removed tokens runs on the gather path: train it with a fixed plan (static)")
        out = _soft_forward(state, hidden_states, valid, training)
    else:
        out = _gather_forward(state, hidden_states, valid, training)
    # the richest public encoder output class: base models read optional fields (e.g. ``cache``) from it
    return EncoderOutput(last_hidden_state=out)


def _make_mask_hook(state: PruningState, forward) -> callable:
    signature = inspect.signature(forward)
    extra = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)

    def flag(name: str, module, bound: dict):
        """An output_* flag of this call: its argument (named, or in **kwargs), else the config's default."""
        value = bound.get(name, bound.get(extra, {}).get(name))
        return getattr(module.config, name, False) if value is None else value

    def capture(module, args, kwargs):
        bound = signature.bind_partial(*args, **kwargs).arguments
        if flag("output_attentions", module, bound):
            raise ToPruneError(
                "output_attentions is not supported on a pruned model (its attention runs over the "
                "surviving tokens only); call it without output_attentions"
            )
        hidden = flag("output_hidden_states", module, bound)
        if hidden is not False and hidden is not True:  # transformers also takes layer indices here
            raise ToPruneError(f"output_hidden_states={hidden!r} is not supported on a pruned model: pass True")
        state.input_mask = bound.get("attention_mask")
        state.input_segments = bound.get("token_type_ids")
        state.hidden_states = [] if hidden else None

    return capture


def _make_release_hook(state: PruningState) -> callable:
    """After the base model's call (also when it raised): nothing of this call outlives it; the hidden states
    recorded on the way go into the output, in place of those transformers' layer hooks never saw."""

    def release(module, args, kwargs, output):
        hidden, state.hidden_states = state.hidden_states, None
        state.input_mask = state.input_segments = None
        if hidden is None or output is None:
            return None
        if not hasattr(output, "hidden_states"):
            raise ToPruneError("output_hidden_states on a pruned model needs return_dict=True")
        output["hidden_states"] = (*hidden, output.last_hidden_state)
        return output

    return release


def apply_pruning(model: nn.Module, plan: PruningPlan | None = None) -> PruningState:
    """Patch ``model`` in place to run with token pruning; returns its :class:`PruningState`.

    Calling it again replaces the plan. ``plan=None`` keeps every token (the model then computes exactly what
    the unmodified HF model computes, with SDPA attention).
    """
    encoder = find_encoder(model)
    parts = block_parts(model)
    plan = plan or PruningPlan.keep_all(len(parts))
    state = getattr(encoder, "_toprune_state", None)
    if state is not None:
        state.set_plan(plan)
        return state
    state = PruningState(parts, plan)
    base = base_model(model)
    state.handles.append(base.register_forward_pre_hook(_make_mask_hook(state, base.forward), with_kwargs=True))
    state.handles.append(base.register_forward_hook(_make_release_hook(state), with_kwargs=True, always_call=True))
    encoder._toprune_state = state
    encoder.forward = _pruned_encoder_forward.__get__(encoder)
    return state


def remove_pruning(model: nn.Module) -> None:
    """Undo :func:`apply_pruning`: the model is the plain HF model again."""
    encoder = find_encoder(model)
    state = encoder.__dict__.pop("_toprune_state", None)
    if state is None:
        return
    for handle in state.handles:
        handle.remove()
    encoder.__dict__.pop("forward", None)


def pruning_state(model: nn.Module) -> PruningState | None:
    return getattr(find_encoder(model), "_toprune_state", None)
