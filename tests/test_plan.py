import json

import pytest
import torch

import toprune
from toprune import PruningPlan, ToPruneError, apply_pruning
from toprune.gates import HardConcreteGates
from toprune.plan import PLAN_FILENAME, ScoringSpec, default_pruning_layers, kept_count

from .conftest import tiny_model


def test_default_pruning_layers_scale_with_depth():
    assert default_pruning_layers(12) == list(range(2, 12))
    assert default_pruning_layers(6) == list(range(1, 6))
    assert default_pruning_layers(24)[0] == 4
    assert default_pruning_layers(2) == [1]


def test_kept_count_bins_act_on_relative_ranks():
    assert kept_count([True, False], 10) == 5
    assert kept_count([True, False], 3) == 2  # ranks 0, 1 -> bin 0; rank 2 -> bin 1
    assert kept_count([False, True], 3) == 1
    assert kept_count([True] * 4, 0) == 0


def test_monotone_ratio_is_ceil_of_ratio_times_n():
    plan = PruningPlan.from_keep_ratios(4, {1: 0.5, 3: 0.3}, num_bins=10)
    assert plan.token_counts(11) == [11, 1 + 5, 6, 1 + 2]
    assert plan.token_counts(1) == [1, 1, 1, 1]  # CLS alone is never pruned
    assert PruningPlan.from_keep_ratios(4, {1: 1.0}).kept_bins == {}


def test_from_masks_skips_layers_whose_gate_is_off():
    gates = HardConcreteGates(2, 4)
    with torch.no_grad():
        gates.bin_log_alpha[:, 2:] = -6.0
        gates.gate_log_alpha[:] = torch.tensor([4.0, -4.0])
    plan = PruningPlan.from_masks(6, [2, 3], *gates.deterministic())
    assert plan.kept_bins == {2: [True, True, False, False]}


def test_layers_after_one_that_keeps_only_cls_leave_the_plan():
    """Once a layer keeps no bin only CLS is left; a later pruning layer could only pay the scoring overhead (a
    learned SST-2 plan that emptied layer 1 kept all-off bins at layers 2-5: predicted 1.45x instead of 1.57x)."""
    off, half = [False] * 4, [True, True, False, False]
    plan = PruningPlan(12, 4, {"10": half, "2": off, "1": half, "3": half})
    assert list(plan.kept_bins) == [1, 2] and plan.drop_flags() == [1.0, 1.0] + [0.0] * 10
    assert plan.token_counts(30) == [30, 16] + [1] * 10  # the counts are those of the plan as it was given
    loaded = PruningPlan.from_dict(plan.to_dict())
    assert loaded.kept_bins == plan.kept_bins
    kept = PruningPlan(12, 4, {10: half, 1: half})  # nothing emptied: every layer stays, in order
    assert list(kept.kept_bins) == [1, 10]


def test_save_load_round_trip(tmp_path):
    plan = PruningPlan.from_keep_ratios(6, {1: 0.7, 4: 0.25}, num_bins=20)
    plan.meta["target"] = "2x"
    plan.save(tmp_path)
    again = PruningPlan.load(tmp_path, num_layers=6)
    assert again.kept_bins == plan.kept_bins and again.num_bins == 20 and again.meta == {"target": "2x"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "corrupt pruning plan"),
        ("[1, 2]", "not a JSON object"),
        ('{"format_version": 1, "num_layers": 6}', "invalid pruning plan"),
        ('{"format_version": 9, "num_layers": 6, "num_bins": 2, "kept_bins": {}}', "unsupported format_version"),
        ('{"format_version": 1, "num_layers": 6, "num_bins": 2, "kept_bins": {"2": "10x"}}', "string of 0/1"),
        ('{"format_version": 1, "num_layers": 6, "num_bins": 2, "kept_bins": {"2": "101"}}', "has 3 bins"),
        ('{"format_version": 1, "num_layers": 6, "num_bins": 2, "kept_bins": {"0": "10"}}', "valid layers"),
    ],
)
def test_bad_plan_files_give_one_line_errors(tmp_path, content, message):
    (tmp_path / PLAN_FILENAME).write_text(content)
    with pytest.raises(ToPruneError, match=message) as info:
        PruningPlan.load(tmp_path)
    assert "\n" not in str(info.value)


def test_mismatched_layer_count(tmp_path):
    PruningPlan.from_keep_ratios(12, {5: 0.5}).save(tmp_path)
    with pytest.raises(ToPruneError, match="12 layers but the model has 6"):
        PruningPlan.load(tmp_path, num_layers=6)


def test_missing_plan(tmp_path):
    with pytest.raises(ToPruneError, match="no pruning plan"):
        PruningPlan.load(tmp_path)


def test_plan_json_is_readable(tmp_path):
    PruningPlan.from_keep_ratios(3, {1: 0.5}, num_bins=4).save(tmp_path)
    data = json.loads((tmp_path / PLAN_FILENAME).read_text())
    assert data["kept_bins"] == {"1": "1100"} and data["keep_ratio_per_layer"] == [1.0, 0.5, 1.0]


def test_scoring_spec_round_trips_apart_from_the_provenance(tmp_path):
    plan = PruningPlan.from_keep_ratios(6, {2: 0.5}, num_bins=10, scoring=ScoringSpec("question", 3, 0))
    plan.meta["target"] = "2x"
    plan.save(tmp_path)
    saved = json.loads((tmp_path / "toprune_plan.json").read_text())
    assert saved["scoring"] == {"kind": "question", "radius": 3, "seed": 0} and saved["meta"] == {"target": "2x"}
    again = PruningPlan.load(tmp_path)
    assert again.scoring == ScoringSpec("question", 3) and again.meta == {"target": "2x"}
    with pytest.raises(toprune.ToPruneError, match="unknown scorer"):
        ScoringSpec("magic")
    with pytest.raises(toprune.ToPruneError, match="radius"):
        ScoringSpec("attention", -1)


@pytest.mark.parametrize(
    "meta, spec",
    [
        ({"scorer": "random", "random_seed": 57, "method": "random"}, ScoringSpec("random", 0, 57)),
        ({"scorer": "question", "score_radius": 2, "dev_metric": 80.0}, ScoringSpec("question", 2, 0)),
        ({"dev_metric": 80.0}, ScoringSpec()),
    ],
)
def test_plans_saved_with_scoring_in_meta_still_load(tmp_path, meta, spec):
    """Plans written before ScoringSpec kept it in meta: it is read into the spec (and leaves meta), and a model
    with such a plan scores that way."""
    legacy = {"format_version": 1, "num_layers": 4, "num_bins": 2, "kept_bins": {"2": "10"}, "meta": dict(meta)}
    (tmp_path / "toprune_plan.json").write_text(json.dumps(legacy))
    plan = PruningPlan.load(tmp_path)
    assert plan.scoring == spec and plan.kept_bins == {2: [True, False]}
    assert not {"scorer", "score_radius", "random_seed"} & set(plan.meta)
    assert {k: v for k, v in meta.items() if k not in ("scorer", "score_radius", "random_seed")} == plan.meta
    state = apply_pruning(tiny_model(), plan)
    assert state.question_scores == (spec.kind == "question") and state.score_radius == spec.radius
    assert (state.random_scores is not None) == (spec.kind == "random")
