"""The measured latency model: the whole-model fit (synthetic timings, outliers), the ONNX Runtime profile (fitted,
cached, refused for another setting), and predictions on dynamically padded batches computed batch by batch."""

import json
import types

import numpy as np
import pytest
import torch
import transformers

import toprune.profile as profile_module
import toprune.latency_check as latency_check
from toprune.constraint import cached_profile_path, latency_cost
from toprune.costmodel import LatencyCost, cost_features, fit_latency_cost, profile_key
from toprune.errors import ToPruneError
from toprune.latency_check import check_real_batches, predict_batches
from toprune.plan import PruningPlan
from toprune.profile import batch_counts, make_batch, random_plan

TRUE = LatencyCost(6, (0.0, 0.012, 2e-5), (0.0, 0.02), fixed=2.0, prune_overhead=0.15, prune_overhead_per_token=0.004)


def tiny_bert(layers: int = 2):
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(
        transformers.BertConfig(
            hidden_size=16,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=32,
            vocab_size=60,
            max_position_embeddings=40,
        )
    ).eval()


def synthetic_calibration(seed: int = 0, configs: int = 40):
    gen = torch.Generator().manual_seed(seed)
    counts = [[n] * 6 for n in (8, 16, 32, 64, 96, 128)]
    while len(counts) < configs:
        plan = random_plan(6, [1, 2, 3, 4, 5], gen)
        counts.append(plan.token_counts(int(torch.randint(8, 129, (), generator=gen))))
    return counts, [TRUE.predict_ms(c) for c in counts]


def test_features_are_the_terms_the_prediction_is_linear_in():
    coef = [
        TRUE.fixed + 6 * (TRUE.attention[0] + TRUE.ffn[0]),
        TRUE.attention[1],
        TRUE.attention[2],
        TRUE.ffn[1],
        TRUE.prune_overhead,
        TRUE.prune_overhead_per_token,
    ]
    for counts in ([50] * 6, [50, 40, 30, 30, 12, 3], [7, 7, 5, 5, 5, 2]):
        assert np.dot(cost_features(counts), coef) == pytest.approx(TRUE.predict_ms(counts))
    # the overhead is paid once, by the layer whose tokens drop (it scores), per token entering it
    free = LatencyCost(6, TRUE.attention, TRUE.ffn, TRUE.fixed)
    counts = [50, 50, 20, 20, 20, 20]
    assert TRUE.predict_ms(counts) - free.predict_ms(counts) == pytest.approx(0.15 + 0.004 * 50)


def test_whole_model_fit_recovers_synthetic_timings_despite_disturbed_ones():
    counts, ms = synthetic_calibration()
    disturbed = list(ms)
    for i in (3, 11, 20):  # another process woke up during three timings
        disturbed[i] *= 1.8
    fit = fit_latency_cost(counts, disturbed, key={"backend": "test"}, layer_constants=(0.1, 0.05))
    assert fit.prune_overhead_per_token == pytest.approx(TRUE.prune_overhead_per_token, rel=0.05)
    assert fit.attention[1] == pytest.approx(TRUE.attention[1], rel=0.05)
    assert fit.ffn[1] == pytest.approx(TRUE.ffn[1], rel=0.05)
    assert fit.attention[0] == pytest.approx(0.1) and fit.ffn[0] == pytest.approx(0.05)  # the split asked for
    assert fit.fixed == pytest.approx(TRUE.fixed - 6 * 0.15, rel=0.02)
    test_counts, test_ms = synthetic_calibration(seed=5)
    worst = max(abs(fit.predict_ms(c) - m) / m for c, m in zip(test_counts, test_ms))
    assert worst < 0.01
    # plain least squares is pulled by the disturbed timings; the robust fit is not
    plain = np.linalg.lstsq(np.array([cost_features(c) for c in counts]), np.array(disturbed), rcond=None)[0]
    plain_worst = max(abs(np.dot(cost_features(c), plain) - m) / m for c, m in zip(test_counts, test_ms))
    assert plain_worst > 5 * worst
    # a constant larger than the fitted total is capped: nothing is negative
    capped = fit_latency_cost(counts, ms, key={}, layer_constants=(5.0, 5.0))
    assert capped.fixed == 0.0 and 6 * (capped.attention[0] + capped.ffn[0]) == pytest.approx(TRUE.fixed, rel=0.02)
    with pytest.raises(ToPruneError, match="at least 6 timings"):
        fit_latency_cost(counts[:3], ms[:3], key={})


def test_the_overhead_is_charged_where_the_runtime_scores_even_when_no_token_drops(monkeypatch):
    """The runtime scores, ranks and gathers before every pruning layer whatever the input's length; the cost model
    charges its overhead on the same layers (PruningPlan.drop_flags), also for a 4-token input whose count never
    falls (keeping 90% of 3 candidates keeps all 3), where counting falls would charge nothing."""
    import toprune
    import toprune.runtime as runtime

    plan = PruningPlan.from_keep_ratios(6, {2: 0.9, 4: 0.9}, num_bins=10)
    scored = []
    real_scores = runtime._scores
    monkeypatch.setattr(
        runtime, "_scores", lambda state, layer, *a: scored.append(layer) or real_scores(state, layer, *a)
    )
    model = tiny_bert(6)
    toprune.apply_pruning(model, plan)
    with torch.inference_mode():
        model(**make_batch(model, [4]))
    assert plan.token_counts(4) == [4] * 6  # nothing drops ...
    assert sorted(set(scored)) == [i for i, flag in enumerate(plan.drop_flags()) if flag] == [1, 3]  # ... yet it scores
    free = LatencyCost(6, TRUE.attention, TRUE.ffn, TRUE.fixed)
    charged = TRUE.predict_ms([4] * 6, plan.drop_flags()) - free.predict_ms([4] * 6)
    assert charged == pytest.approx(2 * (0.15 + 0.004 * 4))
    assert cost_features([4] * 6, plan.drop_flags())[4:] == [2.0, 8.0] and cost_features([4] * 6)[4:] == [0.0, 0.0]
    # a fit on such timings finds the overhead only when told where it was paid
    counts, _ = synthetic_calibration()
    counts = [[min(c, 6) for c in row] for row in counts]  # short inputs: most pruning layers drop nothing
    drops = [[0.0] * 6 if i < 6 else plan.drop_flags() for i in range(len(counts))]
    ms = [TRUE.predict_ms(c, d) for c, d in zip(counts, drops)]
    fit = fit_latency_cost(counts, ms, key={}, drops=drops)
    assert fit.predict_ms([5] * 6, plan.drop_flags()) == pytest.approx(
        TRUE.predict_ms([5] * 6, plan.drop_flags()), rel=1e-3
    )


def test_padded_batches_are_predicted_batch_by_batch_at_their_longest_survivors():
    plan = PruningPlan.from_keep_ratios(6, {2: 0.5, 4: 0.5}, num_bins=10)
    lengths = [41, 9, 23]
    counts = batch_counts(plan, lengths, 6)
    assert counts == [max(plan.token_counts(n)[layer] for n in lengths) for layer in range(6)]
    assert counts[0] == 41 and counts[-1] < 41 and batch_counts(None, lengths, 6) == [41] * 6
    model = tiny_bert(6)
    batches = [make_batch(model, [30, 12, 5]), make_batch(model, [8, 8, 3])]
    per_batch = [TRUE.predict_ms(batch_counts(plan, b["attention_mask"].sum(1).tolist(), 6)) for b in batches]
    assert predict_batches(TRUE, plan, batches) == pytest.approx(sum(per_batch) / 2)
    # not the same as predicting every batch at the longest input seen
    assert predict_batches(TRUE, plan, batches) < TRUE.predict_ms(plan.token_counts(30)) - 0.1


def test_check_on_real_batches_times_each_plan_and_refuses_another_batch_size(tmp_path):
    model = tiny_bert()
    cost = LatencyCost(2, (0.01, 0.001, 0.0), (0.01, 0.001), 0.05, key={**profile_key(model, "pytorch", 2, 1)})
    batches = [make_batch(model, [20, 7], seed=1), make_batch(model, [9, 15], seed=2)]
    learned = {"learned": PruningPlan.from_keep_ratios(2, {1: 0.5}, num_bins=4)}
    out = check_real_batches(model, cost, batches, plans=2, learned=learned, repeats=1, progress=False)
    assert [r["kind"] for r in out["plans"]] == ["dense", "random", "random", "learned"]
    assert all(r["measured_ms"] > 0 for r in out["plans"]) and out["examples"] == 4
    assert out["plans"][3]["predicted_ms"] == pytest.approx(predict_batches(cost, learned["learned"], batches))
    assert out["median_abs_error"] is not None and out["median_abs_error_learned"] is not None
    with pytest.raises(ToPruneError, match="batch size 2"):
        check_real_batches(model, cost, [make_batch(model, [5])], plans=1, progress=False)


def test_real_batch_checks_time_every_plan_once_a_round_and_keep_the_median(monkeypatch):
    import toprune.benchmark as benchmark

    model = tiny_bert()
    cost = LatencyCost(2, (0.01, 0.001, 0.0), (0.01, 0.001), 0.05, key={**profile_key(model, "pytorch", 2, 1)})
    order, clock = [], iter(range(1, 100))  # the machine slows down steadily during the check

    def fake_time_batches(run, batches, name, repeats):
        order.append(name)
        return types.SimpleNamespace(ms_median=float(next(clock)))

    monkeypatch.setattr(benchmark, "time_batches", fake_time_batches)
    out = check_real_batches(model, cost, [make_batch(model, [20, 7])], plans=2, repeats=3, progress=False)
    assert order == ["dense", "random 0", "random 1"] * 3  # round-robin, not plan after plan
    assert [r["measured_ms"] for r in out["plans"]] == [4.0, 5.0, 6.0]  # medians of (1,4,7), (2,5,8), (3,6,9)


def test_uniform_checks_time_every_plan_once_a_round_and_keep_the_median(monkeypatch):
    model = tiny_bert()
    cost = LatencyCost(2, (0.01, 0.001, 0.0), (0.01, 0.001), 0.05, key={**profile_key(model, "pytorch", 1, 1)})
    order, clock = [], iter(range(1, 100))  # the machine slows down steadily during the check

    def fake_time_batch(timer, plan, lengths, repeats):
        order.append(plan.keep_ratio(1))
        return float(next(clock))

    monkeypatch.setattr(latency_check, "time_batch", fake_time_batch)
    out = latency_check.check_predictions(model, cost, plans=2, max_tokens=30, rounds=3, progress=False)
    first, second = [r["keep_ratios"][1] for r in out["plans"]]
    assert order == pytest.approx([first, second] * 3, abs=1e-3)  # round-robin, not plan after plan
    assert [r["measured_ms"] for r in out["plans"]] == [3.0, 4.0]  # medians of (1,3,5) and (2,4,6)


def test_onnxruntime_profile_is_fitted_cached_and_refused_for_another_setting(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("TOPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(profile_module.CALIBRATION, "onnxruntime", (1, 5))  # one exported plan: the test's budget
    model = tiny_bert()
    said = []
    cost = latency_cost(model, "onnxruntime", 2, 1, log=said.append)
    assert "measuring onnxruntime" in said[0]
    positions = min(128, model.config.max_position_embeddings)  # the longest input timed: no longer than the model's
    assert cost.key == profile_key(model, "onnxruntime", 2, 1, positions) and cost.num_layers == 2
    assert cost.predict_ms([30, 30]) > cost.predict_ms([4, 4]) > 0  # more tokens, more time
    cached = cached_profile_path(cost.key)
    assert cached.is_file() and cached != cached_profile_path(profile_key(model, "pytorch", 2, 1))
    assert latency_cost(model, "onnxruntime", 2, 1, log=said.append) == cost and "reusing" in said[-1]
    for backend, batch, threads in (("pytorch", 2, 1), ("onnxruntime", 1, 1), ("onnxruntime", 2, 2)):
        with pytest.raises(ToPruneError, match="run `toprune profile` again"):
            LatencyCost.load(cached, expect=profile_key(model, backend, batch, threads, positions))
    old = json.loads(cached.read_text())  # a profile of the previous fitting method is measured again
    old["key"].pop("version")
    (tmp_path / "v1.json").write_text(json.dumps(old))
    with pytest.raises(ToPruneError, match="version"):
        LatencyCost.load(tmp_path / "v1.json", expect=cost.key)


def test_unknown_backend_is_one_line():
    with pytest.raises(ToPruneError, match="--backend tensorrt"):
        profile_module.profile(tiny_bert(), "tensorrt")


def test_profile_command_fits_caches_and_checks(tmp_path, monkeypatch, capsys):
    from toprune.cli import main

    monkeypatch.setenv("TOPRUNE_CACHE", str(tmp_path / "cache"))
    tiny_bert().save_pretrained(tmp_path / "model")
    assert (
        main(
            [
                "profile",
                str(tmp_path / "model"),
                "--batch-size",
                "2",
                "--threads",
                "1",
                "--max-tokens",
                "24",
                "--check-plans",
                "2",
                "--output",
                str(tmp_path / "p.json"),
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["check"]["median_abs_error"] >= 0 and len(result["check"]["plans"]) == 2
    assert max(row["tokens"] for row in result["check"]["plans"]) <= 24
    saved = LatencyCost.load(tmp_path / "p.json", expect=profile_key(tiny_bert(), "pytorch", 2, 1, max_tokens=24))
    assert saved == LatencyCost.load(result["profile"]["cached_at"])
    with pytest.raises(SystemExit) as exit_code:  # argparse's own one-line error
        main(["profile", str(tmp_path / "model"), "--backend", "tensorrt"])
    assert exit_code.value.code == 2
    capsys.readouterr()
    assert main(["profile", str(tmp_path / "model"), "--pruning-layers", "5"]) == 2  # checked before any timing
    assert "pruning layers must be in 1..1" in capsys.readouterr().err


def test_profile_command_with_a_task_caches_the_profile_a_latency_run_reuses(tmp_path, monkeypatch, capsys):
    """`toprune profile MODEL --task stsb` times the task's training lengths and caches under the key a
    `prune --constraint latency` run of that task computes (so the run reuses it); without --task no task is
    assumed (uniform lengths)."""
    from .conftest import tiny_bert_with_tokenizer, write_small_glue

    from toprune.cli import main
    from toprune.costmodel import median_length, profiled_length
    from toprune.profile import training_lengths

    monkeypatch.setenv("TOPRUNE_CACHE", str(tmp_path / "cache"))
    model, tokenizer = tiny_bert_with_tokenizer()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    glue = write_small_glue(tmp_path / "data", train_rows=40, dev_rows=10) / "glue"
    folder = str(tmp_path / "model")
    common = ["--threads", "1", "--check-plans", "1", "--json"]
    assert main(["profile", folder, "--task", "stsb", "--data-dir", str(glue), *common]) == 0
    key = json.loads(capsys.readouterr().out)["profile"]["key"]
    lengths = training_lengths(folder, "stsb", str(glue))
    assert key["median_tokens"] == median_length(lengths) and key["max_tokens"] == profiled_length(lengths, 128)
    said = []
    latency_cost(model, "pytorch", 1, 1, log=said.append, lengths=lengths)
    assert "reusing" in said[0]
    assert main(["profile", folder, "--max-tokens", "16", *common]) == 0  # no task: uniform, no median in its key
    assert "median_tokens" not in json.loads(capsys.readouterr().out)["profile"]["key"]


def test_fast_timings_repeat_until_the_minimum_time_is_spent(monkeypatch):
    clock = types.SimpleNamespace(now=0.0)
    clock.perf_counter = lambda: clock.now
    monkeypatch.setattr(profile_module, "time", clock)  # a fake clock: the arithmetic, not this machine's timings
    calls = []

    def one_ms():  # 2**-10 s: exact in binary, so the sums below are exact
        calls.append(1)
        clock.now += 2**-10

    profile_module.median_ms(one_ms, repeats=3, min_seconds=0.0)
    assert len(calls) == profile_module.WARMUP + 3  # no minimum: exactly the repeats asked for
    calls.clear()
    ms = profile_module.median_ms(one_ms, repeats=3, min_seconds=0.03)
    assert len(calls) == profile_module.WARMUP + 31  # 31 runs of 0.977 ms are the first to fill 30 ms
    assert ms == 1000 * 2**-10


def test_speedup_error_compares_ratios_to_the_dense_model_timed_beside_them():
    from toprune.latency_check import median_speedup_error

    rows = [
        {"kind": "dense", "predicted_ms": 10.0, "measured_ms": 12.0},  # the machine runs 20% slower than profiled
        {"kind": "random", "predicted_ms": 5.0, "measured_ms": 6.0},  # 2x predicted, 2x measured: no error
        {"kind": "random", "predicted_ms": 5.0, "measured_ms": 8.0},  # 2x predicted, 1.5x measured: 1/3
        {"kind": "learned", "predicted_ms": 4.0, "measured_ms": 4.0},  # 2.5x predicted, 3x measured: 1/6
    ]
    assert median_speedup_error(rows, "random") == pytest.approx((0 + 1 / 3) / 2)
    assert median_speedup_error(rows, "learned") == pytest.approx(1 / 6)
    assert median_speedup_error(rows[:1], "learned") is None
