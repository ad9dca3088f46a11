"""The latency cost model and constraint: fitting on synthetic timings, the expected latency's gradient, plans
fitted to a latency budget, unreachable targets refused, and profiles invalidated when the setting changes."""

import json

import pytest
import torch

from toprune.constraint import cached_profile_path, latency_cost
from toprune.costmodel import LatencyCost, fit_polynomial, median_length, profile_key, profiled_length
from toprune.errors import ToPruneError
from toprune.flops import EncoderDims, dense_cost, expected_relative_macs, min_relative_macs
from toprune.plan import PruningPlan
from toprune.static import plan_relative_macs, static_plan

COST = LatencyCost(6, (0.30, 0.010, 0.0001), (0.20, 0.020), fixed=1.5, prune_overhead=0.25)


def test_polynomial_fit_recovers_synthetic_timings_and_never_goes_negative():
    n = torch.tensor([1, 8, 16, 32, 64, 128, 256], dtype=torch.float64)
    coef = fit_polynomial(n, 0.3 + 0.01 * n + 2e-4 * n**2, 2)
    assert coef == pytest.approx((0.3, 0.01, 2e-4), rel=1e-6)
    noisy = fit_polynomial(n, 0.5 + 0.01 * n - 1e-6 * n**2, 2)  # a tiny negative curvature is noise
    assert all(c >= 0 for c in noisy) and noisy[2] == 0.0
    with pytest.raises(ToPruneError, match="at least 3"):
        fit_polynomial([1, 2], [1.0, 2.0], 2)


def test_layer_cost_charges_the_pruning_overhead_only_where_tokens_drop():
    assert COST.layer_cost(10, 10) == pytest.approx(0.3 + 0.1 + 0.01 + 0.2 + 0.2)
    assert COST.layer_cost(10, 5) == pytest.approx(0.3 + 0.1 + 0.01 + 0.2 + 0.1 + 0.25)
    assert COST.predict_ms([10] * 6) == pytest.approx(1.5 + 6 * COST.layer_cost(10, 10))
    assert dense_cost(COST, 10) == pytest.approx(COST.predict_ms([10] * 6))


def test_expected_latency_is_differentiable_and_falls_as_gates_prune():
    ratios = torch.full((4,), 0.7, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([20.0, 60.0, 120.0], dtype=torch.float64)
    rel = expected_relative_macs(COST, ratios, [2, 3, 4, 5], lengths)
    rel.backward()
    assert 0 < rel.item() < 1 and (ratios.grad > 0).all()  # keeping more costs more, at every layer
    assert ratios.grad[0] > ratios.grad[-1]  # an early layer's ratio multiplies every later layer's tokens
    # the fixed cost bounds what pruning can save: a larger fixed share, a smaller relative saving
    heavy = LatencyCost(6, COST.attention, COST.ffn, fixed=50.0, prune_overhead=0.25)
    assert expected_relative_macs(heavy, ratios.detach(), [2, 3, 4, 5], lengths) > rel.detach()


def test_latency_floor_is_higher_than_the_flops_floor_when_fixed_costs_dominate():
    dims = EncoderDims(6, 384, 1536, 12)
    lengths = torch.tensor([12.0, 30.0])
    flops_floor = min_relative_macs(dims, [2, 3, 4, 5], lengths)
    latency_floor = min_relative_macs(COST, [2, 3, 4, 5], lengths)
    assert latency_floor > flops_floor
    with pytest.raises(ToPruneError, match="unreachable"):
        static_plan(COST, [2, 3, 4, 5], [[12, 30]], 0.9 * latency_floor)


def test_static_plan_meets_a_latency_budget_on_real_counts():
    lengths = [[14, 40, 77, 120]]
    plan = static_plan(COST, [2, 3, 4, 5], lengths, 0.7)
    assert plan_relative_macs(COST, plan, lengths[0]) <= 0.7
    looser = PruningPlan.from_keep_ratios(6, {l: plan.keep_ratio(l) + 0.05 for l in range(2, 6)})
    assert plan_relative_macs(COST, looser, lengths[0]) > 0.7


def test_profiles_are_refused_for_another_setting_and_reused_for_the_same(tmp_path, monkeypatch):
    import transformers

    monkeypatch.setenv("TOPRUNE_CACHE", str(tmp_path))
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100
        )
    )
    key = profile_key(model, "pytorch", 32, 2)
    cost = LatencyCost(2, (0.1, 0.01, 0.0), (0.1, 0.01), 0.5, key=key)
    path = cost.save(tmp_path / "p.json")
    assert LatencyCost.load(path, expect=key) == cost
    for changed in (dict(batch_size=1), dict(threads=4), dict(backend="onnxruntime")):
        with pytest.raises(ToPruneError, match="toprune profile"):
            LatencyCost.load(path, expect={**key, **changed})
    other_shape = profile_key(
        transformers.BertForSequenceClassification(
            transformers.BertConfig(
                hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=100
            )
        ),
        "pytorch",
        32,
        2,
    )
    assert cached_profile_path(other_shape) != cached_profile_path(key)
    # how plans score is part of the setting (value norms cost more per pruning layer), a random scorer's seed is not;
    # so are the runtime's versions
    from toprune.plan import ScoringSpec

    value = profile_key(model, "pytorch", 32, 2, scoring=ScoringSpec("value"))
    assert cached_profile_path(value) != cached_profile_path(key) and key["scoring"] == {
        "kind": "attention",
        "radius": 0,
    }
    seeds = [profile_key(model, "pytorch", 32, 2, scoring=ScoringSpec("random", seed=s)) for s in (1, 2)]
    assert seeds[0] == seeds[1] and key["runtime"].startswith("torch ")
    assert "onnxruntime" in profile_key(model, "onnxruntime", 32, 2)["runtime"]
    cost.save(cached_profile_path(key))  # cached for this setting: reused, nothing measured
    said = []
    assert latency_cost(model, "pytorch", 32, 2, log=said.append) == cost and "reusing" in said[0]
    # the range of lengths timed is part of the setting: a profile of 8-128 tokens is not reused for 27-token data,
    # but a file the user names is theirs to apply (its range is not checked)
    short = profile_key(model, "pytorch", 32, 2, max_tokens=32)
    assert cached_profile_path(short) != cached_profile_path(key)
    with pytest.raises(ToPruneError, match="max_tokens 128"):
        LatencyCost.load(path, expect=short)
    assert latency_cost(model, "pytorch", 32, 2, profile_path=path, lengths=[20] * 50) == cost
    (tmp_path / "bad.json").write_text(json.dumps({"num_layers": 2}))
    with pytest.raises(ToPruneError, match="not a latency profile"):
        LatencyCost.load(tmp_path / "bad.json")


def test_measuring_a_profile_leaves_the_callers_random_state_and_model_alone(tmp_path, monkeypatch):
    """A run that measures its profile trains like one that reuses it: the timing's random inputs do not advance
    the caller's torch RNG; the profile is timed on a model on the CPU (a copy if the caller's is elsewhere)."""
    import transformers

    import toprune.profile as profile_module
    from toprune.constraint import on_cpu

    monkeypatch.setenv("TOPRUNE_CACHE", str(tmp_path))
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100
        )
    )
    timed = []

    def fake_profile(m, *args, **kwargs):
        timed.append(next(m.parameters()).device.type)
        torch.randn(1000)  # what timing with random inputs does to the global generator
        return LatencyCost(2, (0.1, 0.01, 0.0), (0.1, 0.01), 0.5)

    monkeypatch.setattr(profile_module, "profile", fake_profile)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    latency_cost(model, "pytorch", 1, 1, log=lambda *_: None)
    assert torch.equal(torch.rand(3), expected) and timed == ["cpu"]
    assert on_cpu(model) is model  # already on the CPU: no copy


def test_a_malformed_profile_file_is_refused_in_one_line(tmp_path):
    good = LatencyCost(2, (0.1, 0.01, 0.0), (0.1, 0.01), 0.5, key={"shape": [2, 32, 4, 64]}).save(tmp_path / "p.json")
    assert LatencyCost.load(good).attention == (0.1, 0.01, 0.0)
    for broken in ({"attention": [0.1, 0.01]}, {"ffn": ["fast", 1]}, {"num_layers": 3}):
        data = {**json.loads(good.read_text()), **broken}
        (tmp_path / "bad.json").write_text(json.dumps(data))
        with pytest.raises(ToPruneError, match="bad.json: not a latency profile"):
            LatencyCost.load(tmp_path / "bad.json")


def test_the_after_training_check_is_skipped_with_a_line_when_the_slice_is_smaller_than_a_batch():
    from toprune.latency_check import measure_plan

    cost = LatencyCost(2, (0.1, 0.01, 0.0), (0.1, 0.01), 0.5, key={"batch_size": 32, "backend": "pytorch"})
    out = measure_plan(None, cost, PruningPlan.keep_all(2), list(range(30)), tokenizer=None)
    assert out == {"line": out["line"]} and "skipped: 30 selection examples, fewer than one batch of 32" in out["line"]


def test_a_latency_constrained_static_run_meets_its_predicted_target(tiny_teacher, tmp_path):
    from toprune.pretrained import load_model
    from toprune.prune import PruneConfig, ToPRun

    words = ["great", "moving", "dull", "boring", "fine", "awful", "lovely", "slow"]
    rows = [(" ".join(words[(i + k) % 8] for k in range(3 + i % 20)), "pos" if i % 2 else "neg") for i in range(60)]
    for name in ("train.csv", "dev.csv"):
        (tmp_path / name).write_text("sentence,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    model = load_model(tiny_teacher)
    layers = model.config.num_hidden_layers
    cost = LatencyCost(layers, (0.3, 0.01, 1e-4), (0.2, 0.02), 0.4, 0.05, profile_key(model, "pytorch", 1, 1))
    cfg = PruneConfig(
        teacher=tiny_teacher,
        task=None,
        data_dir=None,
        output_dir=str(tmp_path / "top"),
        target="1.3x",
        epochs=2,
        warmup_epochs=1,
        batch_size=8,
        eval_every=7,
        save_every=7,
        num_bins=4,
        topk=3,
        constraint="latency",
        inference_threads=1,
        method="static",
        latency_profile=str(cost.save(tmp_path / "profile.json")),
        train_file=str(tmp_path / "train.csv"),
        validation_file=str(tmp_path / "dev.csv"),
    )
    said = []
    summary = ToPRun(cfg, log=said.append).run()
    assert any("constraint: latency (pytorch, batch 1, 1 threads)" in line for line in said)
    assert summary["best"] is not None and summary["best"]["predicted_speedup"] >= 1.3 - 1e-6
    # the kept plan is then timed against the dense model on the selection slice, beside the same prediction
    check = summary["latency_check"]
    assert check["examples"] == summary["selection"]["examples"] and check["backend"] == "pytorch"
    assert check["measured_ms"]["kept"] > 0 and check["measured_speedup"] > 0
    # the dense prediction, by hand from the profile's coefficients on the selection slice's own lengths (batch 1)
    from toprune.pretrained import load_tokenizer
    from toprune.train import prepare_data

    data = prepare_data(
        load_tokenizer(tiny_teacher), None, None, cfg.max_length, None, cfg.seed,
        train_file=cfg.train_file, validation_file=cfg.validation_file,
    )  # fmt: skip
    lengths = [sum(mask) for mask in data.selection["attention_mask"]][: check["examples"]]
    by_hand = [0.4 + layers * (0.3 + 0.01 * n + 1e-4 * n * n + 0.2 + 0.02 * n) for n in lengths]
    assert check["predicted_ms"]["dense"] == pytest.approx(sum(by_hand) / len(by_hand))
    assert check["predicted_ms"]["dense"] / check["predicted_ms"]["kept"] == pytest.approx(check["predicted_speedup"])
    assert check["predicted_speedup"] > 1.0 and any(line.startswith("latency check on") for line in said)
    assert json.loads((tmp_path / "top" / "summary.json").read_text())["latency_check"] == check
    flops = ToPRun(
        PruneConfig(**{**cfg.__dict__, "constraint": "flops", "output_dir": str(tmp_path / "f")}), log=said.append
    )
    latency = ToPRun(PruneConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "l")}), log=said.append)
    assert flops.fixed_plan.keep_ratio(2) > latency.fixed_plan.keep_ratio(2)  # fixed costs:
    # the same 1.3x in milliseconds asks for more pruning than in FLOPs
    assert summary["dev"]["flops_reduction_unpadded"] > 1.0  # FLOPs still measured and reported
    with pytest.raises(ToPruneError, match="unreachable target 50x"):
        ToPRun(PruneConfig(**{**cfg.__dict__, "target": "50x", "output_dir": str(tmp_path / "x")}))


def test_the_length_profiled_is_the_datas_99th_percentile_in_steps_of_16():
    assert profiled_length([27] * 99 + [200], 512) == 32  # one outlier does not stretch the range
    assert profiled_length([27] * 50 + [200] * 50, 512) == 208
    assert profiled_length([5, 6, 7], 512) == 16  # never under 16
    assert profiled_length([300] * 10, 128) == 128  # never past the limit (the model's positions, or the default)
    assert profiled_length([], 512) == 128


def test_calibration_and_checks_time_the_lengths_the_data_has():
    """Given the data's lengths, every timed length is one of them (clipped to [8, max_tokens]) and the dense model
    is timed at their percentiles; without data, uniform in [8, max_tokens] and the token grid."""
    import torch

    from toprune.profile import calibration_configs, dense_lengths, draw_length

    data = [12] * 60 + [30] * 30 + [70] * 9 + [400]
    configs = calibration_configs(4, 1, 80, plans=6, lengths_per_plan=5, lengths=data)
    timed = [lengths[0] for plan, lengths in configs if plan is not None]
    assert set(timed) <= {12, 30, 70, 80} and timed.count(12) > timed.count(70)
    # the refusal's plan (CLS only from the first pruning layer) is timed too, at as many lengths as a random plan
    floor = [plan for plan, lengths in configs if plan is not None and plan.token_counts(30)[1:] == [1, 1, 1]]
    assert len(floor) == 5 and len(configs) == len(dense_lengths(80, data)) + 7 * 5
    assert dense_lengths(80, data) == [12, 12, 12, 30, 70, 80] and dense_lengths(80) == [16, 24, 32, 48, 64, 80]
    generator = torch.Generator().manual_seed(0)
    uniform = [draw_length(generator, 80) for _ in range(200)]
    assert min(uniform) >= 8 and max(uniform) <= 80 and len(set(uniform)) > 30
    assert draw_length(generator, 80, [3]) == 8 and draw_length(generator, 80, [900]) == 80
    batches = [draw_length(generator, 80, data, batch_size=32) for _ in range(50)]  # a batch runs at its longest
    assert sum(n >= 30 for n in batches) > 45 and set(batches) <= {12, 30, 70, 80}
    assert median_length(data) == 16 and median_length(None) is None


def test_calibration_times_the_floor_plan_and_random_plans_of_the_runs_own_pruning_layers():
    """A run pruning from layer 3 only is refused or not on CLS-only-from-layer-3: that plan is calibrated on, and
    the random plans drop tokens on its layers only; the default layers give the default floor."""
    from toprune.profile import calibration_configs

    configs = calibration_configs(6, 1, 64, plans=4, lengths_per_plan=3, pruning_layers=[3, 5])
    plans = [plan for plan, _ in configs if plan is not None]
    assert all(plan.token_counts(40)[:3] == [40] * 3 for plan in plans)  # layers 0-2 see every token
    assert sum(plan.token_counts(40)[3:] == [1, 1, 1] for plan in plans) == 3  # the floor, at 3 lengths
    default = [plan for plan, _ in calibration_configs(6, 1, 64, plans=4, lengths_per_plan=3) if plan is not None]
    assert sum(plan.token_counts(40)[1:] == [1] * 5 for plan in default) == 3


def test_layers_given_in_another_order_or_repeated_are_calibrated_on_the_same_plans():
    """They share one profile key (sorted, de-duplicated), so they must share the timed plans too."""
    from toprune.profile import check_plans

    def ratios(layers):
        return [plan.to_dict() for plan in check_plans(6, 3, seed=0, pruning_layers=layers)]

    assert ratios([5, 3]) == ratios([3, 5]) == ratios([3, 5, 5])
    assert ratios([5, 4, 3, 2, 1]) == ratios(None)
    assert ratios([3, 5]) != ratios([3, 4])


def test_the_profile_key_names_pruning_layers_only_when_they_are_not_the_default(tmp_path):
    """Profiles of the default layers keep their key (the cache stays valid); other layers are another setting."""
    import transformers

    from toprune.constraint import cached_profile_path

    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(
            hidden_size=32, num_hidden_layers=6, num_attention_heads=4, intermediate_size=64, vocab_size=100
        )
    )
    key = profile_key(model, "pytorch", 1, 1)
    assert profile_key(model, "pytorch", 1, 1, pruning_layers=[5, 4, 3, 2, 1]) == key
    custom = profile_key(model, "pytorch", 1, 1, pruning_layers=[4, 3, 3])
    assert custom["pruning_layers"] == [3, 4] and cached_profile_path(custom) != cached_profile_path(key)
    cost = LatencyCost(6, (0.1, 0.01, 0.0), (0.1, 0.01), 0.5, key=key)
    with pytest.raises(ToPruneError, match="pruning_layers"):
        LatencyCost.load(cost.save(tmp_path / "p.json"), expect=custom)
    # a file the user names is refused for a run on other layers, both ways
    with pytest.raises(ToPruneError, match=r"pruning_layers None \(not \[3, 4\]\)"):
        latency_cost(model, "pytorch", 1, 1, profile_path=tmp_path / "p.json", pruning_layers=[3, 4])
    LatencyCost(6, (0.1, 0.01, 0.0), (0.1, 0.01), 0.5, key=custom).save(tmp_path / "custom.json")
    with pytest.raises(ToPruneError, match=r"pruning_layers \[3, 4\] \(not None\)"):
        latency_cost(model, "pytorch", 1, 1, profile_path=tmp_path / "custom.json")
    assert (
        latency_cost(model, "pytorch", 1, 1, profile_path=tmp_path / "custom.json", pruning_layers=[4, 3]).key == custom
    )
