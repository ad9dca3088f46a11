"""Property-based tests of the pruned forward: any lengths in 1..512, mixed batches, random plans."""

import functools

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toprune import PruningPlan, apply_pruning

from .conftest import random_batch, tiny_model

NUM_LAYERS = 4


@functools.lru_cache(maxsize=1)
def _model():
    return tiny_model("bert", head="AutoModelForTokenClassification")


plans = st.builds(
    lambda bins, layers, masks: PruningPlan(
        NUM_LAYERS, bins, {layer: [bool(b) for b in mask[:bins]] for layer, mask in zip(layers, masks)}
    ),
    st.integers(1, 8),
    st.lists(st.integers(1, NUM_LAYERS - 1), unique=True, max_size=NUM_LAYERS - 1),
    st.lists(st.lists(st.booleans(), min_size=8, max_size=8), min_size=NUM_LAYERS - 1, max_size=NUM_LAYERS - 1),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.integers(1, 512), min_size=1, max_size=4), plan=plans, seed=st.integers(0, 10**6))
def test_pruned_forward_properties(lengths, plan, seed):
    model = _model()
    state = apply_pruning(model, plan)
    state.record = True
    batch = random_batch(lengths, seed=seed)
    with torch.no_grad():
        batched = model(**batch).logits
        counts = state.last.attn_counts
        assert batched.shape[:2] == batch["input_ids"].shape  # full length restored
        assert torch.isfinite(batched).all()
        for b, length in enumerate(lengths):
            assert counts[b].tolist() == plan.token_counts(length)
            single = model(**{k: v[b : b + 1, :length] for k, v in batch.items()}).logits
            assert (single[0] - batched[b, :length]).abs().max() <= 1e-4
