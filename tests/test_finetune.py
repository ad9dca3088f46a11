"""Teacher fine-tuning: selection on the held-out training slice, dev read once, and a killed run that resumes to
the same weights."""

import json

import pytest
import torch
from safetensors.torch import load_file

import toprune.finetune as train
from toprune.selection import HELDOUT_SEED, heldout_size, split_heldout
from toprune.finetune import finetune_teacher


def _files(tmp_path, n=48):
    words = ["great", "moving", "dull", "boring", "fine", "awful", "lovely", "slow"]
    rows = [(f"a {words[i % 8]} film number {i}", "pos" if i % 8 in (0, 1, 4, 6) else "neg") for i in range(n)]
    for name in ("train.csv", "dev.csv"):
        (tmp_path / name).write_text("sentence,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    return dict(train_file=str(tmp_path / "train.csv"), validation_file=str(tmp_path / "dev.csv"))


def test_heldout_slice_is_fixed_disjoint_and_independent_of_the_run_seed():
    from datasets import Dataset

    data = Dataset.from_dict({"text_a": [f"s{i}" for i in range(300)], "label": ["0", "1"] * 150})
    train_a, sel_a = split_heldout(data)
    train_b, sel_b = split_heldout(data.select(range(300)))
    assert sel_a["text_a"] == sel_b["text_a"] and len(sel_a) == heldout_size(300) == 30
    assert not set(sel_a["text_a"]) & set(train_a["text_a"]) and len(train_a) + len(sel_a) == 300
    assert HELDOUT_SEED == 0 and heldout_size(10**6) == 2000  # capped: selection stays cheap on big sets


def test_teacher_selects_on_the_heldout_slice_and_reads_dev_once(tiny_teacher, tmp_path, monkeypatch):
    seen = []
    real = train.evaluate
    monkeypatch.setattr(
        train,
        "evaluate",
        lambda model, loader, *a, **k: seen.append(len(loader.dataset)) or real(model, loader, *a, **k),
    )
    result = finetune_teacher(
        tiny_teacher, None, None, tmp_path / "t", epochs=3, batch_size=8, log=lambda *_: None, **_files(tmp_path)
    )
    assert seen == [5, 5, 5, 48]  # three epochs on the 10% slice (48 -> 5), then dev once
    assert result["selection"]["on"] == "heldout" and result["train_examples"] == 43
    assert [c["step"] for c in result["selection_curve"]] == [6, 12, 18]
    best = max(result["selection_curve"], key=lambda c: c["selection_metric"])
    assert result["kept_step"] == best["step"] and result["selection_metric"] == best["selection_metric"]
    assert not (tmp_path / "t" / "checkpoint.pt").exists()


def test_select_on_dev_is_the_papers_convention(tiny_teacher, tmp_path):
    result = finetune_teacher(
        tiny_teacher,
        None,
        None,
        tmp_path / "t",
        epochs=1,
        batch_size=8,
        select_on="dev",
        log=lambda *_: None,
        **_files(tmp_path),
    )
    assert result["selection"]["on"] == "dev" and result["train_examples"] == 48
    assert result["selection_metric"] == pytest.approx(result["metric"])


def test_a_schedule_of_no_training_step_is_refused_in_one_line(tiny_teacher, tmp_path):
    with pytest.raises(train.ToPruneError, match=r"--epochs 0.1 is no training step: 43 training examples make 6"):
        finetune_teacher(
            tiny_teacher, None, None, tmp_path / "t", epochs=0.1, batch_size=8, log=lambda *_: None, **_files(tmp_path)
        )


def test_killed_finetune_resumes_to_the_same_weights(tiny_teacher, tmp_path, monkeypatch):
    files = _files(tmp_path)
    full = finetune_teacher(
        tiny_teacher, None, None, tmp_path / "full", epochs=3, batch_size=8, log=lambda *_: None, **files
    )
    real, calls = train.evaluate, []

    def dies_in_epoch_three(*a, **k):  # killed after epoch 2's checkpoint was written
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train, "evaluate", dies_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        finetune_teacher(
            tiny_teacher, None, None, tmp_path / "cut", epochs=3, batch_size=8, log=lambda *_: None, **files
        )
    assert (tmp_path / "cut" / "checkpoint.pt").exists()
    monkeypatch.setattr(train, "evaluate", real)
    with pytest.raises(train.ToPruneError, match="other settings"):
        finetune_teacher(
            tiny_teacher,
            None,
            None,
            tmp_path / "cut",
            epochs=3,
            lr=1e-3,
            batch_size=8,
            resume=True,
            log=lambda *_: None,
            **files,
        )
    resumed = finetune_teacher(
        tiny_teacher, None, None, tmp_path / "cut", epochs=3, batch_size=8, resume=True, log=lambda *_: None, **files
    )
    assert resumed["selection_curve"] == full["selection_curve"] and resumed["metric"] == full["metric"]
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "cut" / "toprune_teacher.json").read_text())["kept_step"] == full["kept_step"]


def test_a_second_finetune_into_a_folder_in_use_refuses(tiny_teacher, tmp_path):
    import os

    from toprune.errors import ToPruneError
    from toprune.safeio import LOCK_FILENAME

    out = tmp_path / "busy"
    out.mkdir()
    (out / LOCK_FILENAME).write_text(f"{os.getppid()}\n")  # a live process (our parent) holds it
    with pytest.raises(ToPruneError, match="in use by another toprune run"):
        finetune_teacher(tiny_teacher, None, None, out, epochs=1, batch_size=8, log=lambda *_: None, **_files(tmp_path))
    assert [p.name for p in out.iterdir()] == [LOCK_FILENAME]  # nothing written beside the other run's lock


def test_teacher_recipe_is_the_searched_one_with_the_callers_choices_on_top():
    from toprune.recipes import DEFAULT_TEACHER, TEACHER_RECIPES, teacher_recipe

    assert teacher_recipe("SST2") == TEACHER_RECIPES["sst2"] != DEFAULT_TEACHER  # task names in any case
    assert teacher_recipe("sst2", lr=3e-5, epochs=None).lr == 3e-5  # None keeps the recipe's
    assert teacher_recipe("sst2", epochs=None).epochs == TEACHER_RECIPES["sst2"].epochs
    assert teacher_recipe(None) == teacher_recipe("my-own-data") == DEFAULT_TEACHER
