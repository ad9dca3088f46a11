"""Removed tokens merged into survivors (toprune.merging): the size-weighted mean is kept at the merge point, the
runtime agrees with itself batched and one by one, the exported graph agrees with PyTorch, and survivor pooling
weighs each survivor by the tokens merged into it."""

import numpy as np
import pytest
import torch

import toprune
from toprune import PruningPlan, apply_pruning, pruning_state
from toprune.embedding import Pooling
from toprune.embedding_eval import encode_with_flops
from toprune.errors import ToPruneError
from toprune.export import check_parity, export_onnx, make_session
from toprune.merging import attention_bias, merge_into_survivors
from toprune.plan import ScoringSpec
from toprune.scoring import self_attention

from .conftest import random_batch, tiny_bert_with_tokenizer, tiny_model

MERGE = ScoringSpec("value", merge=True)
PLAN = PruningPlan.from_keep_ratios(4, {1: 0.6, 2: 0.5, 3: 0.5}, num_bins=10, scoring=MERGE)


def test_merging_keeps_the_size_weighted_mean_and_sends_each_token_to_its_nearest_survivor():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 6, 8, generator=gen)
    valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    kept = torch.tensor([[1, 0, 1, 0, 0, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    sizes = torch.tensor([[1.0, 2.0, 1.0, 3.0, 1.0, 1.0], [1.0, 1.0, 2.0, 1.0, 5.0, 5.0]])  # padding's ignored
    merged, new = merge_into_survivors(hidden, kept, valid, sizes)
    for b in range(2):
        w = sizes[b] * valid[b]
        before = (hidden[b] * w[:, None]).sum(0) / w.sum()
        after = (merged[b] * (new[b] * kept[b])[:, None]).sum(0) / (new[b] * kept[b]).sum()
        torch.testing.assert_close(after, before)  # the pooled mean of every token, from the survivors alone
        assert float((new[b] * kept[b]).sum()) == float(w.sum())
    torch.testing.assert_close(merged[~kept], hidden[~kept])  # removed rows untouched (the stash keeps them)
    # by hand: example 1 keeps slots 0 and 1; slots 2 and 3 go to the survivor of higher cosine
    unit = torch.nn.functional.normalize(hidden[1], dim=-1)
    target = {j: int((unit[[0, 1]] @ unit[j]).argmax()) for j in (2, 3)}
    for k in (0, 1):
        members = [k] + [j for j in (2, 3) if target[j] == k]
        weights = torch.tensor([1.0 if j == k else sizes[1, j].item() for j in members])
        expect = (hidden[1, members] * weights[:, None]).sum(0) / weights.sum()
        torch.testing.assert_close(merged[1, k], expect)
    assert attention_bias(None) is None
    bias = attention_bias(torch.tensor([[1.0, 4.0, 0.0]]))  # padding (size 0) is masked elsewhere: finite here
    torch.testing.assert_close(bias, torch.tensor([[1.0, 4.0, 1.0]]).log())


def test_a_merged_key_is_attended_as_its_members_would_be():
    """Proportional attention: one key of size 2 gets the same attention as two identical keys of size 1."""
    model = tiny_model()
    parts = toprune.adapters.block_parts(model)[0]
    h = torch.randn(1, 3, 32, generator=torch.Generator().manual_seed(1))
    twin = torch.cat([h, h[:, 2:]], dim=1)  # slot 3 repeats slot 2
    with torch.no_grad():
        dup, _, _ = self_attention(parts, twin, None, False, False)
        one, probs, _ = self_attention(parts, h, None, True, False, key_bias=torch.tensor([[1.0, 1.0, 2.0]]).log())
        sdpa, _, _ = self_attention(parts, h, None, False, False, key_bias=torch.tensor([[1.0, 1.0, 2.0]]).log())
    torch.testing.assert_close(one, dup[:, :3])
    torch.testing.assert_close(sdpa, one)  # SDPA's float mask and the explicit softmax agree


def test_merging_plans_run_batched_as_one_by_one_and_export_with_parity(tmp_path):
    model = tiny_model()
    apply_pruning(model, PLAN)
    batch = random_batch([9, 3, 17, 12])
    with torch.no_grad():
        together = model(**batch).logits
        alone = torch.cat(
            [
                model(**{k: v[b : b + 1, : int(batch["attention_mask"][b].sum())] for k, v in batch.items()}).logits
                for b in range(4)
            ]
        )
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    plain = tiny_model()
    apply_pruning(
        plain, PruningPlan.from_keep_ratios(4, {1: 0.6, 2: 0.5, 3: 0.5}, num_bins=10, scoring=ScoringSpec("value"))
    )
    with torch.no_grad():
        assert not torch.allclose(plain(**batch).logits, together)  # merging changes what survivors carry
    export_onnx(model, None, tmp_path, samples=[batch])
    checks = [random_batch([30, 2, 11, 25, 1, 7], seed=1), random_batch([14], seed=2)]
    assert check_parity(model, make_session(tmp_path / "model.onnx"), checks) <= 1e-4


def test_survivor_pooling_weighs_merged_survivors_and_exports(tmp_path):
    from toprune.embedding_onnx import export_embedding_onnx
    from toprune.serve import OnnxModel

    model, tokenizer = tiny_bert_with_tokenizer("BertModel")
    apply_pruning(model, PLAN)
    texts = ["a short one", "the cat sat on the mat while the dog slept by the warm fire", "ok", "tokens merge"]
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    state = pruning_state(model)
    state.record = True
    with torch.no_grad():
        model(**batch)
    sizes = state.last.sizes
    torch.testing.assert_close(sizes.sum(1), batch["attention_mask"].sum(1).float())  # every token counted once
    assert bool(((sizes > 0) <= batch["attention_mask"].bool()).all()) and float(sizes.max()) > 1
    pooling = Pooling("mean", True, "survivors")
    ours, _ = encode_with_flops(model, tokenizer, texts, pooling, batch_size=4)
    served = OnnxModel(export_embedding_onnx(model, tokenizer, pooling, tmp_path / "onnx", fuse=False)).encode(texts)
    np.testing.assert_allclose(served, ours, atol=1e-5, rtol=1e-4)


def test_the_merge_flag_round_trips_and_is_refused_where_it_does_not_run():
    data = PLAN.to_dict()
    assert data["scoring"]["merge"] is True and "merged" in PLAN.describe()
    assert PruningPlan.from_dict(data).scoring.merge
    assert "merge" not in PruningPlan.from_keep_ratios(4, {1: 0.5}).to_dict()["scoring"]  # old files unchanged
    with pytest.raises(ToPruneError, match="merge must be true or false"):
        PruningPlan.from_dict({**data, "scoring": {**data["scoring"], "merge": "yes"}})
    model = tiny_model()
    state = apply_pruning(model, PLAN)
    state.soft_masks = toprune.runtime.SoftMasks([1], torch.ones(1, 10), torch.ones(1))
    with pytest.raises(ToPruneError, match="gather path"):
        model(**random_batch([5, 3]))


class EarlyFirst(toprune.strategies.Scorer):
    """Ranks by original position, the first token first (so the first copy of a repeated token survives)."""

    kind = "early_first"

    def token_scores(self, view):
        return -view.positions.to(view.probs.dtype)


def test_merging_exact_twins_gives_the_dense_model_back(monkeypatch):
    """Oracle: without position embeddings a repeated token has its twin's state at every layer. Removing the
    second copies and merging them into the first (size 2, attended twice as much) must leave the dense model's
    CLS output and mean-pooled embedding unchanged, exactly; dropping them must not."""
    monkeypatch.setitem(toprune.strategies.REGISTRY["scorer"], EarlyFirst.kind, EarlyFirst)
    model = tiny_model(head="AutoModel")
    with torch.no_grad():
        model.embeddings.position_embeddings.weight.zero_()
    ids = torch.tensor([[2, 17, 41, 99, 17, 41, 99]])  # CLS, x, y, z, x, y, z
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    pooling = Pooling("mean", False, "survivors")
    with torch.no_grad():
        dense = model(**batch).last_hidden_state
    dense_mean = dense.mean(dim=1)
    outputs = {}
    for merge in (True, False):
        plan = PruningPlan.from_keep_ratios(4, {1: 0.5}, num_bins=2, scoring=ScoringSpec("early_first", merge=merge))
        state = apply_pruning(model, plan)
        with torch.no_grad():
            outputs[merge] = (toprune.embedding.embed(model, batch, pooling, state), model(**batch).last_hidden_state)
        toprune.remove_pruning(model)
    merged_mean, merged = outputs[True]
    torch.testing.assert_close(merged_mean, dense_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged[:, :4], dense[:, :4], atol=1e-5, rtol=1e-5)  # CLS and the survivors
    dropped_mean, dropped = outputs[False]
    assert not torch.allclose(dropped[:, 0], dense[:, 0], atol=1e-3)  # dropping changes what CLS sees
    assert not torch.allclose(dropped_mean, dense_mean, atol=1e-3)
