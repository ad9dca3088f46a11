"""The ToP run: the multipliers' ascent, one-line errors, and a killed run that resumes to the same result."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import toprune
from toprune.prune import PruneConfig, ToPRun
from toprune.train import make_loader
from toprune.plan import PruningPlan
from toprune.static import plan_relative_macs


def _config(teacher, data_dir, out, **kw):
    base = dict(
        teacher=teacher,
        task="mrpc",
        data_dir=str(data_dir / "glue"),
        output_dir=str(out),
        target="1.5x",
        epochs=2,
        warmup_epochs=1,
        batch_size=16,
        max_train_samples=64,
        eval_every=4,
        save_every=2,
        max_length=64,
        num_bins=5,
        topk=4,
    )
    base.update(kw)
    return PruneConfig(**base)


@pytest.mark.parametrize("too", ["sparse", "dense"])
def test_train_step_moves_the_multipliers_against_the_constraint_gap(tiny_teacher, data_dir, tmp_path, too):
    """The run's own step does gradient *ascent* on lambda: below the target sparsity lambda1 turns negative (so the
    model-side gradient of lambda1 (s - t) pushes s up), above it positive; lambda2 grows either way."""
    run = ToPRun(
        _config(tiny_teacher, data_dir, tmp_path, target="1.5x" if too == "dense" else "1.05x"), log=lambda *_: None
    )
    with torch.no_grad():  # "dense": every layer off, far below the target; "sparse": every layer on, most bins off
        run.gates.gate_log_alpha.fill_(-5.0 if too == "dense" else 5.0)
        run.gates.bin_log_alpha.fill_(5.0 if too == "dense" else -5.0)
    run.step = run.warmup_steps  # past the warm-up: the target is fully ramped up
    batch = next(iter(make_loader(run.data.train, run.tokenizer, 16, True)))
    stats = []
    for _ in range(3):
        stats.append(run.train_step(batch))
        run.step += 1
    assert all(s["target_sparsity"] == pytest.approx(1 - 1 / (1.5 if too == "dense" else 1.05)) for s in stats)
    gaps = [s["expected_sparsity"] - s["target_sparsity"] for s in stats]
    assert all(g < 0 for g in gaps) if too == "dense" else all(g > 0 for g in gaps)
    lambda1 = [s["lambda1"] for s in stats]
    lambda2 = [s["lambda2"] for s in stats]
    if too == "dense":
        assert 0 > lambda1[0] > lambda1[1] > lambda1[2]
    else:
        assert 0 < lambda1[0] < lambda1[1] < lambda1[2]
    assert 0 < lambda2[0] < lambda2[1] < lambda2[2]
    # the logged Lagrangian term uses the multipliers from before the step's update
    assert stats[-1]["lag"] == pytest.approx(lambda1[-2] * gaps[-1] + lambda2[-2] * gaps[-1] ** 2, rel=1e-4)


def test_target_sparsity_ramps_up_over_the_warmup(tiny_teacher, data_dir, tmp_path):
    run = ToPRun(_config(tiny_teacher, data_dir, tmp_path), log=lambda *_: None)
    batch = next(iter(make_loader(run.data.train, run.tokenizer, 16, True)))
    assert run.train_step(batch)["target_sparsity"] == 0.0  # step 0: no constraint yet
    run.step = run.warmup_steps // 2
    assert run.train_step(batch)["target_sparsity"] == pytest.approx((1 - 1 / 1.5) * run.step / run.warmup_steps)


def test_unreachable_target_and_teacher_mismatch(tiny_teacher, data_dir, tmp_path):
    with pytest.raises(toprune.ToPruneError, match="unreachable target 50x"):
        ToPRun(_config(tiny_teacher, data_dir, tmp_path, target="50x"))
    with pytest.raises(toprune.ToPruneError, match="has 2 labels but task stsb has 1"):
        ToPRun(_config(tiny_teacher, data_dir, tmp_path, task="stsb"))


def test_killed_run_resumes_to_the_same_result(tiny_teacher, data_dir, tmp_path):
    full = ToPRun(_config(tiny_teacher, data_dir, tmp_path / "full"), log=lambda *_: None).run()
    # the same run in a subprocess, killed (SIGKILL) once its first checkpoint exists
    out = tmp_path / "killed"
    code = (
        f"import torch; from toprune.prune import PruneConfig, ToPRun; import time\n"
        f"cfg = PruneConfig(**{_config(tiny_teacher, data_dir, out).__dict__!r})\n"
        f"run = ToPRun(cfg)\n"
        f"orig = run.train_step\n"
        f"def slow(batch):\n    time.sleep(0.5)\n    return orig(batch)\n"
        f"run.train_step = slow\nrun.run()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint.pt").exists() and not (out / "summary.json").exists()
    resumed = ToPRun(_config(tiny_teacher, data_dir, out, resume=True), log=lambda *_: None).run()
    assert resumed["steps"] == full["steps"] == 8
    log_full = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    log_resumed = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_full] == [r["step"] for r in log_resumed]
    for a, b in zip(log_full, log_resumed):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["sel_metric"] == pytest.approx(b["sel_metric"])
        assert a["sel_keep_ratio_per_layer"] == b["sel_keep_ratio_per_layer"]


def test_user_csv_files_train_a_teacher_and_a_pruning_run(tiny_teacher, tmp_path):
    from toprune.finetune import finetune_teacher

    rows = [
        ("a great film , truly moving", "pos"),
        ("dull and far too long", "neg"),
        ("I loved it", "pos"),
        ("a waste of time", "neg"),
    ] * 8
    for name in ("train.csv", "dev.csv"):
        (tmp_path / name).write_text("sentence,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    files = dict(train_file=str(tmp_path / "train.csv"), validation_file=str(tmp_path / "dev.csv"))
    result = finetune_teacher(
        tiny_teacher, None, None, tmp_path / "teacher", epochs=1, batch_size=8, log=lambda *_: None, **files
    )
    # dev is 4 distinct rows 8 times over, so the accuracy is a multiple of 25 (the metric is a percentage)
    assert result["task"] == "train.csv" and result["metric"] in (0.0, 25.0, 50.0, 75.0, 100.0)  # never a GLUE name
    assert json.loads((tmp_path / "teacher" / "toprune_task.json").read_text())["labels"] == ["neg", "pos"]
    cfg = PruneConfig(
        teacher=str(tmp_path / "teacher"),
        task=None,
        data_dir=None,
        output_dir=str(tmp_path / "top"),
        target="1.2x",
        epochs=1,
        batch_size=8,
        eval_every=2,
        save_every=2,
        max_steps=2,
        num_bins=4,
        topk=3,
        **files,
    )
    summary = ToPRun(cfg, log=lambda *_: None).run()
    assert summary["task"] == "train.csv" and summary["steps"] == 2 and summary["config"]["task"] is None
    assert summary["setup"]["data"] == {"train_file": "train.csv", "validation_file": "dev.csv"}
    setup = summary["setup"]
    assert setup["schedule"]["steps"] == 4 and setup["sizes"]["selection"] == 3  # the held-out slice, 10%
    assert sum(x["train"] for x in setup["labels"]) == 32 - 3 and setup["labels"][1]["label"] == "pos"


def test_two_processes_shard_batches_and_keep_gates_identical(tiny_teacher, data_dir, tmp_path):
    """Data-parallel ToP through accelerate (2 CPU processes, gloo): each process runs half the steps, gate
    gradients are averaged by hand so both copies stay identical, and only the main process writes files."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\nfrom toprune.prune import PruneConfig, ToPRun\n"
        f"cfg = PruneConfig(**{_config(tiny_teacher, data_dir, tmp_path / 'out').__dict__!r})\n"
        "run = ToPRun(cfg, log=lambda *a: None)\nsummary = run.run()\n"
        "rank = run.accelerator.process_index  # one file per process: their stdout lines may interleave\n"
        f"open({str(tmp_path)!r} + f'/rank{{rank}}.txt', 'w').write(' '.join(map(str, ['RANK', rank,\n"
        "     run.accelerator.num_processes, summary['steps'],\n"
        "     repr(run.gates.bin_log_alpha.detach().sum().item())])))\n"
        "run.accelerator.end_training()\n"
    )
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            str(script),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    # the launcher's own traceback fills the tail; keep the children's lines that say what went wrong
    causes = [l for l in proc.stderr.splitlines() if re.search(r"terminate|what\(\)|Error|error|RANK", l)]
    assert proc.returncode == 0, "\n".join(causes[:30]) + "\n" + proc.stdout[-1000:]
    ranks = [path.read_text().split() for path in sorted(tmp_path.glob("rank*.txt"))]
    assert sorted(r[1] for r in ranks) == ["0", "1"] and all(r[2] == "2" for r in ranks)
    assert all(r[3] == "4" for r in ranks)  # 64 examples / (16 per batch * 2 processes) * 2 epochs
    assert ranks[0][4] == ranks[1][4]  # identical gate logits on both processes
    evaluations = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in evaluations] == [4]  # written once, by the main process


@pytest.mark.parametrize("switch", ["no_ranking", "no_layer_gates", "monotone"])
def test_ablation_switches_change_the_method(tiny_teacher, data_dir, tmp_path, switch):
    options = {
        "no_ranking": dict(ranking=False),
        "no_layer_gates": dict(layer_gates=False),
        "monotone": dict(monotone=True),
    }[switch]
    run = ToPRun(_config(tiny_teacher, data_dir, tmp_path, max_steps=2, **options), log=lambda *_: None)
    stats = run.train_step(next(iter(make_loader(run.data.train, run.tokenizer, 16, True))))
    if switch == "no_ranking":
        assert stats["rank"] == 0.0 and not run.state.score_layers
    if switch == "no_layer_gates":
        assert torch.all(run.gates.sample()[1] == 1) and torch.all(run.gates.keep_probs()[1] == 1)
    if switch == "monotone":
        with torch.no_grad():
            run.gates.bin_log_alpha[:, ::2] = -6.0  # would keep every other bin if the bins were free
            run.gates.gate_log_alpha.fill_(5.0)  # every layer gate on
        kept = run.rounded_plan().kept_bins
        assert len(kept) == len(run.layers)
        assert all(bins == sorted(bins, reverse=True) and not all(bins) for bins in kept.values())  # a prefix
        fitted = run.current_plan().kept_bins  # fitted to the budget: bins dropped or given back, still prefixes
        assert all(bins == sorted(bins, reverse=True) for bins in fitted.values())


def test_resume_with_other_settings_is_refused_and_only_overwrite_clears_old_state(tiny_teacher, data_dir, tmp_path):
    ToPRun(_config(tiny_teacher, data_dir, tmp_path, max_steps=2), log=lambda *_: None).run()
    assert (tmp_path / "checkpoint.pt").exists()
    with pytest.raises(toprune.ToPruneError, match=r"other settings \(target\)"):
        ToPRun(_config(tiny_teacher, data_dir, tmp_path, target="1.3x", resume=True), log=lambda *_: None).run()
    (tmp_path / "best").mkdir(exist_ok=True)
    (tmp_path / "best" / "stale").write_text("from an earlier run")
    with pytest.raises(toprune.ToPruneError, match="holds an earlier run"):  # never replaced unasked
        ToPRun(_config(tiny_teacher, data_dir, tmp_path, max_steps=1, save_every=5, eval_every=5))
    assert (tmp_path / "best" / "stale").exists()
    ToPRun(
        _config(tiny_teacher, data_dir, tmp_path, max_steps=1, save_every=5, eval_every=5, overwrite=True),
        log=lambda *_: None,
    ).run()
    assert not (tmp_path / "best" / "stale").exists()


@pytest.mark.parametrize("target", ["nanx", "0.5x", "inf", "1.0"])
def test_nonsense_targets_fail_before_training(target, tmp_path):
    with pytest.raises(toprune.ToPruneError, match="bad FLOPs target"):
        ToPRun(PruneConfig(teacher=str(tmp_path), task="mrpc", data_dir=None, output_dir=str(tmp_path), target=target))


def test_pruning_layers_option_and_its_bounds(tiny_teacher, data_dir, tmp_path):
    run = ToPRun(_config(tiny_teacher, data_dir, tmp_path, pruning_layers=[3, 2], max_steps=1), log=lambda *_: None)
    assert run.layers == [2, 3] and run.rank_layers[0] == 1  # ranking distilled into the layer feeding the first
    with pytest.raises(toprune.ToPruneError, match="pruning layers must be in 1..3"):
        ToPRun(_config(tiny_teacher, data_dir, tmp_path, pruning_layers=[0, 2]))


def test_hard_phase_freezes_the_plan_and_trains_on_the_real_path(tiny_teacher, data_dir, tmp_path):
    run = ToPRun(_config(tiny_teacher, data_dir, tmp_path, epochs=3, hard_epochs=1), log=lambda *_: None)
    assert run.hard_start == 8  # 4 steps per epoch: the last epoch
    gates_at = {}
    original = run.train_step

    def watched(batch):
        stats = original(batch)
        gates_at[run.step] = (run.gates.bin_log_alpha.detach().clone(), run.state.soft_masks is None)
        return stats

    run.train_step = watched
    summary = run.run()
    assert summary["steps"] == 12
    frozen = gates_at[8][0]
    assert not gates_at[7][1] and all(gates_at[s][1] for s in range(8, 12))  # soft masks, then the gather path
    assert all(torch.equal(gates_at[s][0], frozen) for s in range(9, 12))  # the gates no longer move
    assert run.fixed_plan.meta["frozen_at_step"] == 8
    assert run.current_plan().kept_bins == run.fixed_plan.kept_bins
    resumed = ToPRun(
        _config(tiny_teacher, data_dir, tmp_path, epochs=3, hard_epochs=1, resume=True), log=lambda *_: None
    )
    resumed.load_checkpoint()
    assert resumed.fixed_plan is not None and resumed.fixed_plan.kept_bins == run.fixed_plan.kept_bins


def test_hard_phase_must_fit_after_the_warmup(tiny_teacher, data_dir, tmp_path):
    with pytest.raises(toprune.ToPruneError, match="must fit after the warm-up"):
        ToPRun(_config(tiny_teacher, data_dir, tmp_path, epochs=2, warmup_epochs=1, hard_epochs=1.5))


@pytest.mark.parametrize("monotone", [False, True])
def test_frozen_plan_gives_back_bins_up_to_the_target(tiny_teacher, data_dir, tmp_path, monotone):
    run = ToPRun(_config(tiny_teacher, data_dir, tmp_path, target="1.3x", monotone=monotone), log=lambda *_: None)
    with torch.no_grad():  # every layer on, most bins dropped: far past a 1.3x target
        run.gates.gate_log_alpha.fill_(5.0)
        run.gates.bin_log_alpha.fill_(-5.0)
        run.gates.bin_log_alpha[:, 0] = 5.0
    lengths = [[len(x) for x in split["input_ids"]] for split in (run.data.train, run.data.dev)]

    def rel(plan):
        return max(plan_relative_macs(run.dims, plan, ls) for ls in lengths)

    strict, relaxed = run.rounded_plan(), run.fitted_plan()
    assert rel(strict) < rel(relaxed) <= run.target_rel
    for layer, bins in relaxed.kept_bins.items():
        assert all(b or not s for b, s in zip(bins, strict.kept_bins[layer]))  # only gives bins back
        if monotone:
            assert bins == sorted(bins, reverse=True)
        for b, kept in enumerate(bins):  # every bin still dropped would break the target
            if not kept and (not monotone or bins[b - 1]):
                trial = PruningPlan(
                    relaxed.num_layers,
                    relaxed.num_bins,
                    {**relaxed.kept_bins, layer: bins[:b] + [True] + bins[b + 1 :]},
                )
                assert rel(trial) > run.target_rel


def test_question_scorer_needs_token_type_ids(tiny_teacher, data_dir, tmp_path):
    """RoBERTa-style tokenizers make no token_type_ids: the question scorer would silently score with every row."""
    folder = tmp_path / "no-segments"
    shutil.copytree(tiny_teacher, folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["model_input_names"] = ["input_ids", "attention_mask"]
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(toprune.ToPruneError, match="--scorer question needs token_type_ids"):
        ToPRun(_config(str(folder), data_dir, tmp_path, scorer="question"))
    with pytest.raises(toprune.ToPruneError, match="needs a question-answering task"):
        ToPRun(_config(tiny_teacher, data_dir, tmp_path, rank_target="answer"))


@pytest.mark.parametrize("fit", [True, False])
def test_evaluated_plan_is_fitted_unless_asked_for_the_authors_rounding(tiny_teacher, data_dir, tmp_path, fit):
    run = ToPRun(_config(tiny_teacher, data_dir, tmp_path, target="1.5x", fit_plan=fit), log=lambda *_: None)
    with torch.no_grad():  # every layer on, every bin kept: far from the target
        run.gates.gate_log_alpha.fill_(5.0)
        run.gates.bin_log_alpha.fill_(5.0)
    plan, rounded = run.current_plan(), run.rounded_plan()
    lengths = [[len(x) for x in split["input_ids"]] for split in (run.data.train, run.data.dev)]
    if fit:
        assert plan.meta.get("fitted") and all(
            plan_relative_macs(run.dims, plan, ls) <= run.target_rel for ls in lengths
        )
    else:
        assert plan.kept_bins == rounded.kept_bins and not plan.meta.get("fitted")
