import pytest
import torch

import toprune
from toprune import PruningPlan, ToPruneError, apply_pruning, load_model, save_pruned
from toprune.plan import PLAN_FILENAME

from .conftest import SENTENCES


def test_default_model_is_the_real_packaged_minilm(minilm):
    model, tokenizer = minilm
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert tokenizer.cls_token == "[CLS]" and len(tokenizer) == 30522


def test_save_load_round_trip_identical_outputs(minilm, tmp_path):
    model, tokenizer = minilm
    apply_pruning(model, PruningPlan.from_keep_ratios(6, {2: 0.6, 3: 0.5, 5: 0.4}, num_bins=20))
    save_pruned(model, tmp_path, tokenizer)
    assert (tmp_path / PLAN_FILENAME).is_file()
    loaded = load_model(tmp_path)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    assert toprune.pruning_state(loaded).plan.kept_bins == toprune.pruning_state(model).plan.kept_bins


def test_corrupt_plan_in_model_folder(minilm, tmp_path):
    model, tokenizer = minilm
    save_pruned(model, tmp_path, tokenizer)
    (tmp_path / PLAN_FILENAME).write_text('{"format_version": 1, "num_layers": 12, "num_bins": 1, "kept_bins": {}}')
    with pytest.raises(ToPruneError, match="12 layers but the model has 6"):
        load_model(tmp_path)
    (tmp_path / PLAN_FILENAME).write_text("garbage")
    with pytest.raises(ToPruneError, match="corrupt pruning plan"):
        load_model(tmp_path)


def test_bad_model_paths(tmp_path):
    with pytest.raises(ToPruneError, match="not a Hugging Face model folder"):
        toprune.resolve_model(tmp_path)
    with pytest.raises(ToPruneError, match="does not exist"):
        toprune.resolve_model("./no/such/folder")
