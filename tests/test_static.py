"""The baselines: a fixed geometric schedule at a FLOPs target, and random token dropping at the same counts."""

import pytest
import torch

import toprune
from toprune import PruningPlan, apply_pruning
from toprune.plan import ScoringSpec
from toprune.flops import EncoderDims
from toprune.prune import ToPRun
from toprune.static import fit_plan, plan_relative_macs, static_plan
from toprune.train import make_loader

from .conftest import random_batch, tiny_model
from .test_prune import _config

DIMS = EncoderDims(num_layers=6, hidden=384, ffn=1536, heads=12)


def test_static_plan_is_the_largest_geometric_schedule_meeting_the_target():
    lengths = [12, 40, 75, 128, 33]
    plan = static_plan(DIMS, [1, 2, 3, 4, 5], [lengths], 0.5)
    ratios = [plan.keep_ratio(layer) for layer in range(1, 6)]
    ratio = min(ratios)
    assert plan.keep_ratio(0) == 1.0 and 0 < ratio < 1  # layer 0 never prunes
    assert all(r in (ratio, round(ratio + 0.01, 2)) for r in ratios)  # one shared ratio, within one bin
    assert plan_relative_macs(DIMS, plan, lengths) <= 0.5
    looser = PruningPlan.from_keep_ratios(6, {layer: ratio + 0.01 for layer in range(1, 6)})
    assert plan_relative_macs(DIMS, looser, lengths) > 0.5  # one step more everywhere keeps too much
    for layer in range(1, 6):  # and no layer can take one more bin: the plan is as close to the budget as it gets
        if plan.keep_ratio(layer) == ratio:
            more = PruningPlan.from_keep_ratios(6, {i: plan.keep_ratio(i) + 0.01 * (i == layer) for i in range(1, 6)})
            assert plan_relative_macs(DIMS, more, lengths) > 0.5


def test_static_plan_gives_back_what_one_shared_ratio_overshoots_on_short_inputs():
    lengths = [5, 7, 8, 9, 11, 12, 13, 14, 16, 18, 21, 25]  # short phrases: kept counts are ceilings, costs jump
    shared = {k: PruningPlan.from_keep_ratios(6, {i: k / 100 for i in range(1, 6)}) for k in range(1, 100)}
    best_shared = max((k for k, p in shared.items() if plan_relative_macs(DIMS, p, lengths) <= 0.5))
    plan = static_plan(DIMS, [1, 2, 3, 4, 5], [lengths], 0.5)
    cost, cost_shared = plan_relative_macs(DIMS, plan, lengths), plan_relative_macs(DIMS, shared[best_shared], lengths)
    assert cost_shared < cost <= 0.5  # closer to the budget than the shared ratio, never past it
    assert min(plan.keep_ratio(i) for i in range(1, 6)) == best_shared / 100


def test_static_plan_padded_reference_and_unreachable_target():
    lengths = [10, 20]
    padded = static_plan(DIMS, [1, 2, 3, 4, 5], [lengths], 0.5, reference_length=128)
    assert padded.keep_ratio(5) == 1.0  # padding removal alone exceeds 2x against the padded model
    with pytest.raises(toprune.ToPruneError, match="unreachable target"):
        static_plan(DIMS, [3, 4, 5], [lengths], 0.2)
    with pytest.raises(toprune.ToPruneError, match="unknown scorer"):
        static_plan(DIMS, [1], [lengths], 0.9, scoring="magic")


def test_random_scorer_keeps_the_same_counts_but_other_tokens():
    model = tiny_model()
    plan = PruningPlan.from_keep_ratios(4, {1: 0.5, 2: 0.5}, num_bins=10)
    state = apply_pruning(model, plan)
    state.record = True
    batch = random_batch([9, 3, 17, 1, 12])
    with torch.no_grad():
        model(**batch)
        by_attention = state.last
        plan.scoring = ScoringSpec("random")
        apply_pruning(model, plan)
        assert state.random_scores is not None
        model(**batch)
        by_chance = state.last
    assert torch.equal(by_attention.attn_counts, by_chance.attn_counts)
    kept = [set(p[p >= 0].tolist()) for p in by_attention.positions[-1]]
    kept_random = [set(p[p >= 0].tolist()) for p in by_chance.positions[-1]]
    assert kept != kept_random


@pytest.mark.parametrize("method", ["static", "random"])
def test_baseline_run_trains_on_the_gather_path_and_saves_its_fixed_plan(tiny_teacher, data_dir, tmp_path, method):
    run = ToPRun(
        _config(tiny_teacher, data_dir, tmp_path, method=method, max_steps=4, eval_every=2), log=lambda *_: None
    )
    before = {k: v.clone() for k, v in run.student.state_dict().items()}
    stats = run.train_step(next(iter(make_loader(run.data.train, run.tokenizer, 16, True))))
    assert stats["rank"] == 0.0 and stats["expected_sparsity"] >= 1 - 1 / 1.5 - 1e-9
    assert run.state.soft_masks is None and not run.state.score_layers
    changed = [k for k, v in run.student.state_dict().items() if not torch.equal(v, before[k])]
    assert any("encoder" in k for k in changed)  # the weights learned through the gather path
    summary = run.run()
    assert summary["best"]["flops_reduction_unpadded"] >= 1.5
    saved = PruningPlan.load(tmp_path / "best")
    assert saved.meta["method"] == method and saved.scoring.kind == ("random" if method == "random" else "attention")
    assert saved.kept_bins == run.fixed_plan.kept_bins


def test_unknown_method_is_refused(tiny_teacher, data_dir, tmp_path):
    with pytest.raises(toprune.ToPruneError, match="method must be one of"):
        ToPRun(_config(tiny_teacher, data_dir, tmp_path, method="magic"))


@pytest.mark.parametrize("monotone", [False, True])
def test_fit_plan_drops_empty_bins_until_short_inputs_really_meet_the_target(monotone):
    """10 candidates in 20 bins fill only the even bins: a rounded plan that drops the 10 odd bins is 'at 50%' by
    the expected ratios yet removes nothing. The fitted plan meets the target on the real counts, and is maximal."""
    layers, lengths = [1, 2, 3, 4, 5], [[11] * 50, [11] * 20]
    kept = torch.ones(len(layers), 20, dtype=torch.bool)
    if not monotone:
        kept[:, 1::2] = False  # the odd (empty) bins dropped
    on = torch.ones(len(layers), dtype=torch.bool)
    logits = torch.linspace(3.0, -3.0, 20).repeat(len(layers), 1) + torch.arange(len(layers))[:, None] * 0.01
    rounded = PruningPlan.from_masks(6, layers, kept, on)
    assert all(plan_relative_macs(DIMS, rounded, ls) > 0.5 for ls in lengths)
    fitted = fit_plan(DIMS, layers, kept, on, logits, lengths, 0.5, monotone=monotone)
    assert all(plan_relative_macs(DIMS, fitted, ls) <= 0.5 for ls in lengths)
    for layer, bins in fitted.kept_bins.items():
        if monotone:
            assert bins == sorted(bins, reverse=True)  # still a prefix
        for b, on_bin in enumerate(bins):  # giving back any one dropped bin that could come back breaks the target
            if not on_bin and (not monotone or b == 0 or bins[b - 1]):
                trial = PruningPlan(6, 20, {**fitted.kept_bins, layer: bins[:b] + [True] + bins[b + 1 :]})
                assert any(plan_relative_macs(DIMS, trial, ls) > 0.5 for ls in lengths)


def test_fit_plan_leaves_gated_off_layers_dense():
    layers = [1, 2, 3]
    kept = torch.ones(3, 10, dtype=torch.bool)
    on = torch.tensor([True, False, True])
    fitted = fit_plan(DIMS, layers, kept, on, torch.zeros(3, 10), [[30, 60]], 0.6)
    assert not fitted.prunes(2) and (fitted.prunes(1) or fitted.prunes(3))
    assert plan_relative_macs(DIMS, fitted, [30, 60]) <= 0.6


def test_score_radius_travels_in_the_plans_and_a_negative_one_is_refused(tiny_teacher, data_dir, tmp_path):
    run = ToPRun(_config(tiny_teacher, data_dir, tmp_path, method="static", score_radius=3))
    assert run.fixed_plan.scoring.radius == 3  # saved with the model: a reload ranks the same way
    assert run.rounded_plan().scoring.radius == 3
    with pytest.raises(toprune.ToPruneError, match="score_radius must be >= 0"):
        ToPRun(_config(tiny_teacher, data_dir, tmp_path, score_radius=-1))
