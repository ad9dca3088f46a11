"""The pruned encoder against the unmodified HF model, across families, paths and heads."""

import pytest
import torch

import toprune
from toprune import PruningPlan, apply_pruning, pruning_state, remove_pruning
from toprune.plan import ScoringSpec
from toprune.runtime import SoftMasks

from .conftest import FAMILIES, SENTENCES, random_batch, tiny_model

LENGTHS = [9, 3, 17, 1, 12]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_keep_all_equals_unmodified_model(family):
    model = tiny_model(family)
    batch = random_batch(LENGTHS, pad_id=model.config.pad_token_id or 0)
    with torch.no_grad():
        reference = model(**batch).logits
        apply_pruning(model)
        patched = model(**batch).logits
        pruning_state(model).force_scoring = True  # explicit-softmax attention at every scoring layer
        scored = model(**batch).logits
    assert (reference - patched).abs().max() <= 1e-5
    assert (reference - scored).abs().max() <= 1e-5


def test_keep_all_equals_unmodified_minilm(minilm):
    model, tokenizer = minilm
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model(**batch).logits
        apply_pruning(model).force_scoring = True
        patched = model(**batch).logits
    assert (reference - patched).abs().max() <= 1e-5


def test_remove_pruning_restores_plain_model():
    model = tiny_model()
    batch = random_batch(LENGTHS)
    with torch.no_grad():
        reference = model(**batch).logits
        apply_pruning(model, PruningPlan.from_keep_ratios(4, {1: 0.3, 2: 0.3}))
        assert (model(**batch).logits - reference).abs().max() > 1e-4
        remove_pruning(model)
        assert torch.equal(model(**batch).logits, reference)
    assert pruning_state(model) is None
    assert not any("toprune" in key for key in model.state_dict())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_batched_equals_one_by_one_and_counts_follow_plan(family):
    model = tiny_model(family)
    plan = PruningPlan.from_keep_ratios(4, {1: 0.6, 2: 0.5, 3: 0.7}, num_bins=10)
    state = apply_pruning(model, plan)
    state.record = True
    pad = model.config.pad_token_id or 0
    batch = random_batch(LENGTHS, pad_id=pad)
    with torch.no_grad():
        batched = model(**batch).logits
        counts = state.last.attn_counts
        for b, length in enumerate(LENGTHS):
            single = {k: v[b : b + 1, :length] for k, v in batch.items()}
            assert (model(**single).logits - batched[b]).abs().max() <= 1e-4
            assert counts[b].tolist() == plan.token_counts(length)


def test_value_scored_plans_batch_like_one_by_one_and_choose_other_tokens():
    """The value-weighted scorer on the gather path: a padded batch equals its examples one by one, and it keeps
    other tokens than plain attention (the plan's kind is really used)."""
    model = tiny_model("bert", head="AutoModelForTokenClassification")
    plan = PruningPlan.from_keep_ratios(4, {1: 0.5, 2: 0.6}, num_bins=10, scoring=ScoringSpec("value"))
    state = apply_pruning(model, plan)
    state.record = True
    batch = random_batch(LENGTHS, seed=4)
    with torch.no_grad():
        batched = model(**batch).logits
        kept_value = [p.clone() for p in state.last.positions]
        for b, length in enumerate(LENGTHS):
            single = {k: v[b : b + 1, :length] for k, v in batch.items()}
            assert (model(**single).logits[0] - batched[b, :length]).abs().max() <= 1e-4
        state.set_plan(PruningPlan.from_keep_ratios(4, {1: 0.5, 2: 0.6}, num_bins=10))
        model(**batch)
    assert any(not torch.equal(a.sort(1).values, b.sort(1).values) for a, b in zip(kept_value, state.last.positions))


def test_tokens_really_removed_sequence_gets_shorter(minilm):
    model, tokenizer = minilm
    state = apply_pruning(model, PruningPlan.from_keep_ratios(6, {layer: 0.5 for layer in range(2, 6)}))
    state.record = True
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=False)
    lengths = state.last.computed_lengths
    assert lengths[0] == lengths[1] == batch["input_ids"].shape[1]
    assert all(a > b for a, b in zip(lengths[1:5], lengths[2:6]))
    assert out.logits.shape == (len(SENTENCES), 2)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_soft_path_with_binary_masks_equals_gather_path_and_restores_positions(family):
    """Deterministic masks in the training path (nothing removed) give the same full-length output as the
    inference path (tokens gathered, then scattered back): so restored states sit at their original positions."""
    model = tiny_model(family, head="AutoModelForTokenClassification")
    layers = [1, 2, 3]
    kept = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 0], [1, 1, 1, 0]], dtype=torch.bool)
    plan = PruningPlan.from_masks(4, layers, kept, torch.ones(3, dtype=torch.bool))
    state = apply_pruning(model, plan)
    batch = random_batch(LENGTHS, seed=3)
    valid = batch["attention_mask"].bool()
    with torch.no_grad():
        gathered = model(**batch).logits
        state.soft_masks = SoftMasks(layers, kept.float(), torch.ones(3))
        soft = model(**batch).logits
    assert (gathered - soft)[valid].abs().max() <= 1e-4
    assert gathered.shape[:2] == batch["input_ids"].shape


def test_qa_head_sees_full_length_sequence(minilm):
    import transformers

    model = transformers.BertForQuestionAnswering.from_pretrained(
        toprune.resolve_model("minilm"), attn_implementation="sdpa"
    ).eval()
    tokenizer = minilm[1]
    apply_pruning(model, PruningPlan.from_keep_ratios(6, {2: 0.4, 4: 0.4}))
    batch = tokenizer(["Who prunes tokens?"] * 2, SENTENCES[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    assert out.start_logits.shape == batch["input_ids"].shape
    assert torch.isfinite(out.start_logits).all()


def test_soft_path_is_differentiable_in_mask_values():
    model = tiny_model()
    state = apply_pruning(model)
    bins = torch.full((2, 4), 0.5, requires_grad=True)
    gates = torch.ones(2, requires_grad=True)
    state.soft_masks = SoftMasks([2, 3], bins, gates)
    state.score_layers = {0, 1}
    out = model(**random_batch(LENGTHS)).logits
    out.square().sum().backward()
    assert bins.grad is not None and bins.grad.abs().sum() > 0
    assert gates.grad is not None
    assert set(state.last.scores) == {0, 1} and set(state.last.keep) == {2, 3}


def test_gather_path_records_scores_at_original_positions():
    """Losses compare a layer's scores with full-length targets: the gather path scatters its survivors' scores
    back to their original positions, marks who was scored, and gradients flow through."""
    model = tiny_model()
    batch = random_batch(LENGTHS)
    state = apply_pruning(model)
    state.score_layers = {0, 2}
    model(**batch)
    dense = {i: state.last.scores[i].detach() for i in (0, 2)}
    state.set_plan(PruningPlan.from_keep_ratios(4, {2: 0.5}, num_bins=10))
    state.record = True
    model(**batch).logits.sum()  # training-like forward, gradients on
    valid = batch["attention_mask"].bool()
    assert torch.equal(state.last.scored[0], valid)
    assert torch.allclose(state.last.scores[0], dense[0] * valid, atol=1e-6)  # layer 0: nothing pruned yet
    survivors = torch.zeros_like(valid)
    final = state.last.positions[2]
    rows = torch.arange(final.shape[0]).unsqueeze(1).expand_as(final)
    survivors[rows[final >= 0], final[final >= 0]] = True
    assert torch.equal(state.last.scored[2], survivors) and survivors.sum() < valid.sum()
    assert (state.last.scores[2][~survivors] == 0).all()
    state.last.scores[2].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_single_token_survivor():
    """A layer keeping nothing but CLS, and an input of CLS alone."""
    model = tiny_model()
    state = apply_pruning(model, PruningPlan.from_keep_ratios(4, {1: 0.0}))
    state.record = True
    with torch.no_grad():
        out = model(**random_batch([7, 1])).logits
    assert torch.isfinite(out).all()
    assert state.last.attn_counts.tolist() == [[7, 1, 1, 1], [1, 1, 1, 1]]
    assert state.last.computed_lengths == [7, 1, 1, 1]


def test_mismatched_plan_is_rejected():
    with pytest.raises(toprune.ToPruneError, match="12 layers but the model has 4"):
        apply_pruning(tiny_model(), PruningPlan.from_keep_ratios(12, {3: 0.5}))


def _pairs_batch(lengths, seed=0):
    """A random batch of sentence pairs: the first ~third of each example is segment 0 (with CLS), the rest 1."""
    batch = random_batch(lengths, seed=seed)
    segments = torch.zeros_like(batch["input_ids"])
    for b, length in enumerate(lengths):
        segments[b, max(2, length // 3) : length] = 1
    return batch | {"token_type_ids": segments}


@pytest.mark.parametrize("radius", [0, 2])
def test_question_scorer_follows_the_surviving_question_rows_per_example(radius):
    """The question scorer's rows travel with the survivors: the batched gather path equals one-by-one runs, the
    soft path with binary masks equals the gather path, and the scores differ from the all-rows scorer. With a
    score radius the neighbourhoods are original positions in both paths, so they still agree."""
    model = tiny_model("bert", head="AutoModelForTokenClassification")
    kept = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    plan = PruningPlan.from_masks(
        4, [1, 2, 3], kept, torch.ones(3, dtype=torch.bool), scoring=ScoringSpec("question", radius)
    )
    state = apply_pruning(model, plan)
    assert state.question_scores and state.score_radius == radius
    batch = _pairs_batch(LENGTHS, seed=5)
    valid = batch["attention_mask"].bool()
    with torch.no_grad():
        batched = model(**batch).logits
        for b, length in enumerate(LENGTHS):
            single = {k: v[b : b + 1, :length] for k, v in batch.items()}
            assert (model(**single).logits[0] - batched[b, :length]).abs().max() <= 1e-4
        state.soft_masks = SoftMasks([1, 2, 3], kept.float(), torch.ones(3))
        soft = model(**batch).logits
        state.soft_masks = None
        assert (batched - soft)[valid].abs().max() <= 1e-4
        state.set_plan(PruningPlan.from_masks(4, [1, 2, 3], kept, torch.ones(3, dtype=torch.bool)))
        assert not state.question_scores and state.score_radius == 0
        assert (model(**batch).logits - batched)[valid].abs().max() > 1e-4  # other survivors


def test_row_gather_and_scatter_match_torch_gather_and_scatter():
    from toprune.runtime import gather_rows, scatter_rows_

    x = torch.randn(3, 7, 5, requires_grad=True)
    index = torch.stack([torch.randperm(7)[:4] for _ in range(3)])
    expanded = index.unsqueeze(-1).expand(-1, -1, 5)
    assert torch.equal(gather_rows(x, index), x.gather(1, expanded))
    dest = scatter_rows_(torch.zeros(3, 8, 5), index, gather_rows(x, index))
    assert torch.equal(dest, torch.zeros(3, 8, 5).scatter(1, expanded, x.gather(1, expanded)))
    dest.sum().backward()  # the gradient reaches exactly the gathered rows, once each
    picked = torch.zeros(3, 7).scatter(1, index, 1.0)
    assert torch.equal(x.grad, picked.unsqueeze(-1).expand(-1, -1, 5))


# -- Hugging Face's output contract ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_hidden_states_of_a_keep_all_plan_equal_the_dense_ones(family):
    model = tiny_model(family)
    batch = random_batch([9, 5, 7])
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        dense = model(**batch, output_hidden_states=True).hidden_states
        apply_pruning(model)
        kept = model(**batch, output_hidden_states=True).hidden_states
    assert len(kept) == len(dense) == 5
    assert all(torch.allclose(a[real], b[real], atol=1e-5) for a, b in zip(kept, dense))


def test_pruned_hidden_states_are_full_length_at_their_original_positions():
    """Pruning at layer 2 happens between the attention and the FFN of layer 1: survivors' states match the dense
    model up to layer 1's output, and a dropped token keeps its state at removal in every later layer, as in the
    final output."""
    model = tiny_model("bert")
    batch = random_batch([9, 6])
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        dense = model(**batch, output_hidden_states=True).hidden_states
        state = apply_pruning(model, PruningPlan.from_keep_ratios(4, {2: 0.5}))
        state.record = True
        out = model(**batch, output_hidden_states=True)
        last = model.base_model(**batch).last_hidden_state
    states = out.hidden_states
    assert len(states) == 5 and all(h.shape == (2, 9, 32) for h in states)
    assert torch.allclose(states[0][real], dense[0][real])
    assert torch.allclose(states[1][real], dense[1][real], atol=1e-5)
    survivors = torch.zeros_like(real)
    for b, row in enumerate(state.last.positions[2]):
        survivors[b, row[row >= 0]] = True
    dropped = real & ~survivors
    assert survivors.sum() < real.sum() and dropped.any()
    assert torch.allclose(states[2][survivors], dense[2][survivors], atol=1e-5)
    assert not torch.allclose(states[2][dropped], dense[2][dropped], atol=1e-3)  # not FFN'd: dropped before it
    for later in states[3:]:
        assert torch.equal(later[dropped], states[2][dropped])
    assert torch.equal(states[-1], last)


def test_attentions_and_index_selections_are_refused_in_one_line():
    model = tiny_model("bert")
    apply_pruning(model, PruningPlan.from_keep_ratios(4, {2: 0.5}))
    batch = random_batch([9, 6])
    with pytest.raises(toprune.ToPruneError, match="output_attentions is not supported on a pruned model"):
        model(**batch, output_attentions=True)
    model.config.output_hidden_states = True  # the config's default counts too
    with torch.no_grad():
        assert len(model(**batch).hidden_states) == 5
    model.config.output_hidden_states = False
    with pytest.raises(toprune.ToPruneError, match=r"output_hidden_states=\[1\] is not supported"):
        model(**batch, output_hidden_states=[1])
    with pytest.raises(toprune.ToPruneError, match="needs return_dict=True"):
        model.base_model(**batch, output_hidden_states=True, return_dict=False)
    state = pruning_state(model)
    state.soft_masks = SoftMasks([2], torch.ones(1, 4), torch.ones(1))
    with pytest.raises(toprune.ToPruneError, match="soft"):
        model(**batch, output_hidden_states=True)


def test_nothing_of_a_call_outlives_it():
    model = tiny_model("bert")
    state = apply_pruning(model, PruningPlan.from_keep_ratios(4, {2: 0.5}))
    batch = random_batch([9, 6])
    with torch.no_grad():
        model(**batch, token_type_ids=torch.zeros_like(batch["input_ids"]), output_hidden_states=True)
    assert state.input_mask is None and state.input_segments is None and state.hidden_states is None
    with pytest.raises(IndexError), torch.no_grad():  # a failing call (ids out of the vocabulary) leaves nothing
        model(input_ids=batch["input_ids"] + 1000, attention_mask=batch["attention_mask"])
    assert state.input_mask is None
    # the encoder called on its own (no base model call around it) sees no stale mask: every token is real
    hidden = torch.randn(2, 9, 32)
    with torch.no_grad():
        alone = model.base_model.encoder(hidden).last_hidden_state
        state.input_mask = torch.ones(2, 9, dtype=torch.long)
        explicit = model.base_model.encoder(hidden).last_hidden_state
    assert torch.equal(alone, explicit)
