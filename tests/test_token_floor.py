"""The token floor (``PruningPlan.min_tokens``): inputs under it pass a pruning layer whole, everywhere the plan's
rule runs (Python counts, the batched and batch-1 PyTorch paths, the exported graph's table), and nowhere else."""

import json

import pytest
import torch

import toprune
from toprune import PruningPlan, apply_pruning
from toprune.errors import ToPruneError
from toprune.export import check_parity, export_onnx, make_session
from toprune.plan import kept_ranks
from toprune.prune_config import check_config
from toprune.survivors import rank_keep

from .conftest import random_batch, tiny_model

RATIOS = {1: 0.5, 2: 0.5, 3: 0.5}
FLOOR = 10


def _plan(floor: int = FLOOR) -> PruningPlan:
    return PruningPlan.from_keep_ratios(4, RATIOS, num_bins=10, min_tokens=floor)


def test_kept_ranks_keep_everything_under_the_floor_only():
    bins = [True] * 5 + [False] * 5
    for m in range(1, 30):
        expected = list(range(m)) if m + 1 < FLOOR else kept_ranks(bins, m)
        assert kept_ranks(bins, m, FLOOR) == expected
    assert kept_ranks(bins, 8, FLOOR) == list(range(8))  # 9 tokens with CLS: under 10
    assert kept_ranks(bins, 9, FLOOR) == [0, 1, 2, 3, 4]  # 10 tokens: pruned


def test_token_counts_stop_falling_at_the_floor():
    plan, plain = _plan(), _plan(0)
    assert plan.token_counts(9) == [9, 9, 9, 9]  # under the floor from the start: never pruned
    assert plain.token_counts(9) == [9, 5, 3, 2]
    counts = plan.token_counts(40)
    assert counts[:2] == plain.token_counts(40)[:2] and counts[1] < 40  # long: pruned as without a floor ...
    for before, after in zip(counts, counts[1:]):
        assert after == before if before < FLOOR else after < before  # ... until it is under the floor


@pytest.mark.parametrize("size", [None, 40])
def test_rank_keep_on_tensors_and_tables_follows_the_floor(size):
    gen = torch.Generator().manual_seed(0)
    lengths = [3, 8, 9, 10, 11, 25]
    n = max(lengths)
    valid = torch.arange(n) < torch.tensor(lengths).unsqueeze(1)
    scores = torch.rand(len(lengths), n, generator=gen)
    bins = [True] * 5 + [False] * 5
    _, kept = rank_keep(scores, valid, bins, size=size, min_tokens=FLOOR)
    for row, length in enumerate(lengths):
        assert kept[row].sum().item() == 1 + len(kept_ranks(bins, length - 1, FLOOR))
    assert kept[0].sum().item() == 3 and kept[5].sum().item() < 25


def test_short_inputs_equal_the_dense_model_and_long_ones_the_plan_without_floor():
    model = tiny_model()
    lengths = [6, 30, 9, 22]  # two under the floor, two over it
    batch = random_batch(lengths)
    with torch.no_grad():
        dense = model(**batch).logits
        apply_pruning(model, _plan(0))
        plain = model(**batch).logits
        state = apply_pruning(model, _plan())
        state.record = True
        floored = model(**batch).logits
        counts = state.last.attn_counts
        for b, length in enumerate(lengths):  # batch 1 (the unpadded fast path) agrees with the padded batch
            single = {k: v[b : b + 1, :length] for k, v in batch.items()}
            assert (model(**single).logits - floored[b]).abs().max() <= 1e-4
            assert counts[b].tolist() == _plan().token_counts(length)
    assert (floored[[0, 2]] - dense[[0, 2]]).abs().max() <= 1e-5  # short: nothing removed
    assert (floored[[0, 2]] - plain[[0, 2]]).abs().max() > 1e-4  # ... where the plain plan did remove tokens
    assert (floored[1] - plain[1]).abs().max() <= 1e-4  # long: the first layers prune as without a floor
    assert counts[1, 1].item() == 1 + len(kept_ranks([True] * 5 + [False] * 5, 29))


def test_the_floor_survives_export_and_a_reload(tmp_path):
    model = tiny_model()
    apply_pruning(model, _plan())
    export_onnx(model, None, tmp_path / "onnx", samples=[random_batch([12, 3, 17, 9])])
    others = [random_batch([5, 30, 9, 11, 10], seed=1), random_batch([8], seed=2), random_batch([26], seed=3)]
    assert check_parity(model, make_session(tmp_path / "onnx" / "model.onnx"), others) <= 1e-4
    _plan().save(tmp_path / "plan")
    saved = json.loads((tmp_path / "plan" / "toprune_plan.json").read_text())
    assert saved["min_tokens"] == FLOOR and saved["format_version"] == 2  # older readers refuse, not ignore it
    assert PruningPlan.load(tmp_path / "plan").min_tokens == FLOOR
    assert _plan(0).to_dict()["format_version"] == 1  # plans without a floor stay readable by older versions


def test_bad_floors_are_refused_in_one_line(tmp_path):
    with pytest.raises(ToPruneError, match="min_tokens"):
        _plan(-1)
    data = _plan().to_dict()
    data["format_version"] = 1
    with pytest.raises(ToPruneError, match="min_tokens needs format_version 2"):
        PruningPlan.from_dict(data)
    data = {**_plan().to_dict(), "min_tokens": "ten"}
    with pytest.raises(ToPruneError, match="min_tokens must be an integer"):
        PruningPlan.from_dict(data)
    with pytest.raises(ToPruneError, match="min_tokens must be an integer >= 0"):
        check_config(toprune.PruneConfig(method="static", min_tokens=-2))
    with pytest.raises(ToPruneError, match="--min-tokens"):
        check_config(toprune.PruneConfig(min_tokens=16))  # ToP's soft phase does not model it


def test_a_static_schedule_with_a_floor_prunes_harder_to_meet_the_same_target():
    from toprune.flops import EncoderDims
    from toprune.static import plan_relative_macs, static_plan

    dims = EncoderDims.from_config(tiny_model().config)
    lengths = [6, 8, 12, 30, 40, 60]
    plain = static_plan(dims, [1, 2, 3], [lengths], 0.6)
    floored = static_plan(dims, [1, 2, 3], [lengths], 0.6, min_tokens=FLOOR)
    assert floored.min_tokens == FLOOR and plain.min_tokens == 0
    assert floored.keep_ratio(1) < plain.keep_ratio(1)
    assert plan_relative_macs(dims, floored, lengths) <= 0.6


def test_static_and_given_runs_carry_the_floor_into_their_plan(tmp_path):
    import copy

    from toprune.train import prepare_data

    from .conftest import tiny_bert_with_tokenizer, write_small_glue

    teacher, tokenizer = tiny_bert_with_tokenizer()
    data = prepare_data(tokenizer, "mrpc", write_small_glue(tmp_path / "data", 40, 10) / "glue", 64, seed=57)
    quiet = dict(log=lambda *_: None)
    common = dict(max_length=64, target="1.3x", batch_size=8)
    static = toprune.Pruner(
        copy.deepcopy(teacher), teacher, tokenizer, data, toprune.PruneConfig(method="static", **common), **quiet
    )
    floored = toprune.Pruner(
        copy.deepcopy(teacher),
        teacher,
        tokenizer,
        data,
        toprune.PruneConfig(method="static", min_tokens=FLOOR, **common),
        **quiet,
    )
    assert static.fixed_plan.min_tokens == 0 and floored.fixed_plan.min_tokens == FLOOR
    config = toprune.PruneConfig(init_from="static-run/best", min_tokens=FLOOR + 2, **common)
    given = toprune.Pruner(copy.deepcopy(static.student), teacher, tokenizer, data, config, **quiet)
    assert given.fixed_plan.min_tokens == FLOOR + 2
    assert given.fixed_plan.kept_bins == static.fixed_plan.kept_bins


def test_a_merging_plan_with_a_floor_leaves_short_inputs_alone_in_pytorch_and_onnx(tmp_path):
    from toprune.plan import ScoringSpec

    model = tiny_model()
    plan = PruningPlan.from_keep_ratios(4, RATIOS, num_bins=10, scoring=ScoringSpec("value", merge=True), min_tokens=12)
    batch = random_batch([7, 28, 11, 19])
    with torch.no_grad():
        dense = model(**batch).logits
        apply_pruning(model, plan)
        merged = model(**batch).logits
    assert (merged[[0, 2]] - dense[[0, 2]]).abs().max() <= 1e-5  # under 12 tokens: nothing removed, nothing merged
    assert (merged[[1, 3]] - dense[[1, 3]]).abs().max() > 1e-4
    export_onnx(model, None, tmp_path, samples=[batch])
    assert check_parity(model, make_session(tmp_path / "model.onnx"), [random_batch([5, 30, 12], seed=7)]) <= 1e-4
