"""The Pruner in memory: no folders, the same plan and numbers as the run in a folder (and the code before it)."""

import copy

import pytest
import torch

import toprune
from toprune.errors import ToPruneError
from toprune.train import prepare_data, seed_everything

from .behaviour_reference import BASE, this_cpu_reference
from .conftest import tiny_bert_with_tokenizer, write_small_glue


def test_pruner_in_memory_fits_the_recorded_plan(tmp_path):
    want = this_cpu_reference()["top"]  # a seeded run's plan depends on the CPU model's floats
    data_dir = write_small_glue(tmp_path / "data")
    teacher, tokenizer = tiny_bert_with_tokenizer()
    student = copy.deepcopy(teacher)
    config = toprune.PruneConfig(task="mrpc", **BASE)
    seed_everything(config.seed)
    data = prepare_data(tokenizer, "mrpc", data_dir / "glue", config.max_length, config.max_train_samples, config.seed)
    pruner = toprune.Pruner(student, teacher, tokenizer, data, config, log=lambda *_: None)
    summary = pruner.fit()
    assert pruner.plan.to_dict()["kept_bins"] == want["kept_bins"]
    assert summary["best"]["step"] == want["best"]["step"]
    assert summary["dev"]["metric"] == pytest.approx(want["dev"]["metric"], rel=1e-6)
    assert summary["dev"]["flops_reduction_unpadded"] == pytest.approx(want["dev"]["flops_reduction_unpadded"])
    assert pruner.plan.meta["dev_metric"] == summary["dev"]["metric"] and pruner.plan.meta["method"] == "top"
    assert toprune.pruning_state(pruner.model).plan is pruner.plan  # the student carries the kept plan
    assert not list(tmp_path.glob("**/checkpoint.pt"))  # nothing written: the run folder is the CLI's


def test_pruner_refuses_a_pruned_teacher_a_bad_strategy_name_and_no_training_step(tmp_path):
    teacher, tokenizer = tiny_bert_with_tokenizer()
    data_dir = write_small_glue(tmp_path / "data", train_rows=40, dev_rows=10)
    data = prepare_data(tokenizer, "mrpc", data_dir / "glue", 64, seed=57)
    with pytest.raises(toprune.ToPruneError, match="method must be one of top, static, random, given, got 'magic'"):
        toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, toprune.PruneConfig(method="magic"))
    with pytest.raises(toprune.ToPruneError, match=r"--epochs 0.01 is no training step: 36 training examples make 2"):
        toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, toprune.PruneConfig(epochs=0.01))
    toprune.apply_pruning(teacher, toprune.PruningPlan.from_keep_ratios(4, {2: 0.5}))
    with pytest.raises(toprune.ToPruneError, match="already pruned"):
        toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, toprune.PruneConfig(max_length=64))


def test_a_new_constraint_is_one_class_in_the_registry(tmp_path, monkeypatch):
    """Registered under a name, a Constraint subclass is what the config's choice builds and what judges every
    evaluation (here: FLOPs, with a stricter bar, so nothing is kept)."""
    from toprune.constraint import FlopsConstraint
    from toprune.strategies import REGISTRY

    judged = []

    class Stricter(FlopsConstraint):
        name = "stricter"

        def judge(self, result, plan, run):
            super().judge(result, plan, run)
            judged.append(result["flops_reduction_unpadded"])
            result["meets_target"] = False

    monkeypatch.setitem(REGISTRY["constraint"], "stricter", Stricter)
    data_dir = write_small_glue(tmp_path / "data", train_rows=40, dev_rows=10)
    teacher, tokenizer = tiny_bert_with_tokenizer()
    data = prepare_data(tokenizer, "mrpc", data_dir / "glue", 64, seed=57)
    config = toprune.PruneConfig(
        task="mrpc", constraint="stricter", max_length=64, batch_size=8, max_steps=2, eval_every=2, target="1.2x"
    )
    pruner = toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, config, log=lambda *_: None)
    assert isinstance(pruner.constraint, Stricter)
    summary = pruner.fit()
    assert len(judged) == 1 and summary["best"] is None and pruner.plan is None
    with pytest.raises(toprune.ToPruneError, match="constraint must be one of flops, latency, stricter"):
        toprune.Pruner(teacher, teacher, tokenizer, data, toprune.PruneConfig(constraint="nope", max_length=64))


def test_a_constraint_written_before_cost_took_lengths_still_works(tmp_path, monkeypatch):
    """A user's constraint whose ``cost(self, model, cfg, log=print)`` has no ``lengths`` (the signature before
    issue 22) is called without it; the built-in ones get the training lengths."""
    from toprune.constraint import Constraint, FlopsConstraint, constraint_cost
    from toprune.strategies import REGISTRY

    calls = []

    class Older(FlopsConstraint):
        name = "older"

        def cost(self, model, cfg, log=print):
            calls.append(cfg)
            return super().cost(model, cfg, log)

    class Newer(Constraint):
        def cost(self, model, cfg, log=print, **options):
            return options

    assert constraint_cost(Newer(), None, None, lengths=[3, 4]) == {"lengths": [3, 4]}
    monkeypatch.setitem(REGISTRY["constraint"], "older", Older)
    data_dir = write_small_glue(tmp_path / "data", train_rows=40, dev_rows=10)
    teacher, tokenizer = tiny_bert_with_tokenizer()
    data = prepare_data(tokenizer, "mrpc", data_dir / "glue", 64, seed=57)
    config = toprune.PruneConfig(task="mrpc", constraint="older", max_length=64, batch_size=8, target="1.2x")
    pruner = toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, config, log=lambda *_: None)
    assert calls == [config] and pruner.cost.num_layers == 4


def test_ramp_starts_at_the_initial_masks_expected_sparsity_when_asked(tmp_path):
    """--ramp-start initial: the first step's target is the initial masks' expected sparsity on the training lengths
    (so lambda1 starts at the gap's sign, not pushing the masks up), rising linearly to the final target; the
    default ramp starts at 0."""
    teacher, tokenizer = tiny_bert_with_tokenizer()
    data_dir = write_small_glue(tmp_path / "data", train_rows=64, dev_rows=10)
    data = prepare_data(tokenizer, "mrpc", data_dir / "glue", 64, seed=57)
    targets = {}
    for start in ("zero", "initial"):
        config = toprune.PruneConfig(max_length=64, target="2x", epochs=2, warmup_epochs=1, ramp_start=start)
        pruner = toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, config, log=lambda *_: None)
        batch = next(iter(pruner_batches(pruner)))
        first = pruner.train_step(batch)
        targets[start] = (pruner.ramp_start, first["target_sparsity"], first["expected_sparsity"])
    assert targets["zero"][:2] == (0.0, 0.0)
    start, first_target, first_expected = targets["initial"]
    assert 0.0 < start < 0.5  # gates and bins start (almost) on: a few percent
    assert first_target == pytest.approx(start)
    assert first_expected == pytest.approx(start, abs=0.02)  # the batch's lengths, not the whole set's


def pruner_batches(pruner):
    from toprune.train import make_loader

    return make_loader(pruner.data.train, pruner.tokenizer, pruner.cfg.batch_size, True, pruner.cfg.seed, 0)


def test_latency_overhead_is_charged_by_the_gates_but_never_pushes_them_off(tmp_path):
    """A latency profile's pruning overhead counts in the soft plan's expected cost (by P(gate on)), but gives the
    layer gates no gradient: from the dense start, switching a gate off would shed the overhead before the bins have
    saved anything, and the run would learn to prune nothing (benchmarks/README.md, section 8)."""
    from toprune.costmodel import LatencyCost, profile_key

    teacher, tokenizer = tiny_bert_with_tokenizer()
    data_dir = write_small_glue(tmp_path / "data", train_rows=40, dev_rows=10)
    data = prepare_data(tokenizer, "mrpc", data_dir / "glue", 64, seed=57)
    layers = teacher.config.num_hidden_layers
    key = profile_key(teacher, "pytorch", 1, 1)
    costs = {}
    for overhead in (0.0, 0.5):
        profile = LatencyCost(layers, (0.3, 0.01, 1e-4), (0.2, 0.02), 0.4, overhead, key, 0.01)
        config = toprune.PruneConfig(
            max_length=64,
            target="1.3x",
            constraint="latency",
            inference_threads=1,
            latency_profile=str(profile.save(tmp_path / f"profile-{overhead}.json")),
        )
        pruner = toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, config, log=lambda *_: None)
        rel = pruner.expected_relative_cost(torch.tensor([12.0, 30.0, 50.0]))
        rel.backward()
        costs[overhead] = rel.item()
        assert (pruner.gates.gate_log_alpha.grad <= 0).all()  # a gate on never costs more in the gradient
        assert (pruner.gates.bin_log_alpha.grad > 0).all()  # dropping tokens saves
    assert costs[0.5] > costs[0.0] + 0.05  # ... while the value pays the overhead of every layer that is on


def test_a_latency_run_profiles_the_lengths_of_its_own_training_data(tmp_path, monkeypatch):
    """Without a saved profile, `prune --constraint latency` measures one timed on its training data's lengths (up
    to their 99th percentile: a line fitted over 8-128 tokens mispredicted 27-token STS-B pairs, benchmarks/README.md
    section 8, session 18), and caches it under that range and median."""
    import toprune.profile as profile_module
    from toprune.constraint import cached_profile_path
    from toprune.costmodel import LatencyCost, median_length, profile_key, profiled_length

    monkeypatch.setenv("TOPRUNE_CACHE", str(tmp_path / "cache"))
    teacher, tokenizer = tiny_bert_with_tokenizer()
    data = prepare_data(tokenizer, "mrpc", write_small_glue(tmp_path / "data", 40, 10) / "glue", 64, seed=57)
    asked, layers_asked = [], []

    def fake_profile(model, backend, batch_size, threads, max_tokens, lengths, scoring=None, pruning_layers=None):
        asked.append(max_tokens)
        layers_asked.append(pruning_layers)
        assert sorted(lengths) == sorted(pruner_lengths(lengths))
        key = profile_key(
            model, backend, batch_size, threads, max_tokens, median_length(lengths), scoring, pruning_layers
        )
        return LatencyCost(model.config.num_hidden_layers, (0.3, 0.01, 1e-4), (0.2, 0.02), 0.4, 0.0, key)

    def pruner_lengths(lengths):  # the training split's lengths, as the pruner reads them
        return [len(ids) for ids in data.train["input_ids"]]

    monkeypatch.setattr(profile_module, "profile", fake_profile)
    config = toprune.PruneConfig(max_length=64, target="1.2x", constraint="latency", inference_threads=1)
    pruner = toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, config, log=lambda *_: None)
    limit = min(128, teacher.config.max_position_embeddings)
    assert asked == [profiled_length(pruner.split_lengths[0], limit)] and asked[0] < limit
    assert cached_profile_path(pruner.cost.key).is_file() and pruner.cost.key["max_tokens"] == asked[0]
    assert pruner.cost.key["median_tokens"] == median_length(pruner.split_lengths[0])
    assert layers_asked == [None] and "pruning_layers" not in pruner.cost.key
    # a run on other pruning layers times its own floor plan (CLS only from its first layer): another profile
    last = teacher.config.num_hidden_layers - 1
    config = toprune.PruneConfig(
        max_length=64, target="1.1x", constraint="latency", inference_threads=1, pruning_layers=[last]
    )
    pruner = toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, config, log=lambda *_: None)
    assert layers_asked == [None, [last]] and pruner.cost.key["pruning_layers"] == [last]
    # a layer out of range is named as the option, before anything is timed
    config = toprune.PruneConfig(
        max_length=64, target="1.1x", constraint="latency", inference_threads=1, pruning_layers=[last + 1]
    )
    with pytest.raises(ToPruneError, match="pruning layers must be in"):
        toprune.Pruner(copy.deepcopy(teacher), teacher, tokenizer, data, config, log=lambda *_: None)
    assert layers_asked == [None, [last]]


def test_a_pruned_start_trains_its_plan_as_int8_and_keeps_a_float_model(tmp_path):
    """--init-from + --qat: the run starts from a pruned model's weights and plan (kept fixed); while it trains and
    selects, every encoder Linear computes ONNX Runtime's dynamic INT8; the kept model is plain float again, with the
    same plan, still labelled with the method that found it."""
    from torch import nn

    from toprune.adapters import find_encoder
    from toprune.prune_config import check_config

    teacher, tokenizer = tiny_bert_with_tokenizer()
    data_dir = write_small_glue(tmp_path / "data", train_rows=40, dev_rows=10)
    data = prepare_data(tokenizer, "mrpc", data_dir / "glue", 64, seed=57)
    quiet = dict(log=lambda *_: None)
    common = dict(max_length=64, target="1.5x", batch_size=8, eval_every=2)
    start = toprune.Pruner(
        copy.deepcopy(teacher),
        teacher,
        tokenizer,
        data,
        toprune.PruneConfig(method="static", max_steps=2, **common),
        **quiet,
    )
    start.fit()
    config = toprune.PruneConfig(init_from="static-run/best", qat=True, max_steps=4, **common)
    assert config.method == "given"
    pruner = toprune.Pruner(copy.deepcopy(start.model), teacher, tokenizer, data, config, **quiet)
    linears = [m for m in find_encoder(pruner.student).modules() if isinstance(m, nn.Linear)]
    assert linears and all("forward" in m.__dict__ for m in linears)  # simulated INT8 while it trains
    pruner.fit()
    assert not any("forward" in m.__dict__ for m in linears)  # the kept model is float
    assert pruner.plan.kept_bins == start.plan.kept_bins
    assert pruner.plan.meta["method"] == "static" and "qat" in pruner.plan.meta
    assert pruner.plan.meta["init_from"] == "static-run/best"
    with pytest.raises(toprune.ToPruneError, match="short of --target 3x"):
        toprune.Pruner(
            copy.deepcopy(start.model),
            teacher,
            tokenizer,
            data,
            toprune.PruneConfig(init_from="x", max_length=64, target="3x"),
            **quiet,
        )
    with pytest.raises(toprune.ToPruneError, match="--init-from FOLDER"):
        check_config(toprune.PruneConfig(method="given"))
    with pytest.raises(toprune.ToPruneError, match="--hard-epochs"):
        check_config(toprune.PruneConfig(qat=True))
