import pytest
import torch

from toprune import EncoderDims, PruningPlan, apply_pruning, batch_flops, encoder_macs, expected_relative_macs
from toprune.flops import count_flops, dense_macs, layer_macs

from .conftest import SENTENCES


def test_layer_macs_formula():
    dims = EncoderDims(num_layers=1, hidden=8, ffn=32, heads=2)
    assert layer_macs(dims, 10, 4) == 4 * 10 * 64 + 100 * (16 + 2) + 2 * 4 * 8 * 32


def test_dims_from_distilbert_config():
    import transformers

    config = transformers.DistilBertConfig(dim=32, n_layers=3, n_heads=4, hidden_dim=64)
    assert EncoderDims.from_config(config) == EncoderDims(3, 32, 64, 4)


def test_expected_macs_match_plan_counts_for_long_inputs_and_are_differentiable():
    dims = EncoderDims(6, 384, 1536, 12)
    ratios = torch.tensor([0.5, 0.5, 0.5, 0.5], requires_grad=True)
    lengths = torch.tensor([401.0])
    rel = expected_relative_macs(dims, ratios, [2, 3, 4, 5], lengths)
    rel.backward()
    counts = PruningPlan.from_keep_ratios(6, {layer: 0.5 for layer in range(2, 6)}).token_counts(401)
    assert rel.detach().item() == pytest.approx(encoder_macs(dims, counts) / dense_macs(dims, 401), rel=1e-3)
    assert torch.all(ratios.grad > 0)


def test_batch_flops_two_conventions():
    dims = EncoderDims(2, 4, 8, 1)
    report = batch_flops(dims, torch.tensor([[10, 5], [4, 2]]), padded_length=16)
    assert report.pruned_macs == encoder_macs(dims, [10, 5]) + encoder_macs(dims, [4, 2])
    assert report.dense_unpadded_macs == dense_macs(dims, 10) + dense_macs(dims, 4)
    assert report.dense_padded_macs == 2 * dense_macs(dims, 16)
    assert report.reduction_padded > report.reduction_unpadded > 1
    assert "vs dense unpadded" in report.summary() and "padded to 16" in report.summary()


def test_flop_counter_confirms_real_savings_and_the_analytical_model(minilm):
    """torch.utils.flop_counter on the inference path: a ~50% plan from layer 2 costs <= 0.6x dense, and our
    analytical MACs model agrees with the counter within 2%."""
    model, tokenizer = minilm
    dims = EncoderDims.from_config(model.config)
    batch = tokenizer(SENTENCES[1], return_tensors="pt")
    measured = {}
    for name, plan in [("dense", None), ("pruned", PruningPlan.from_keep_ratios(6, {layer: 0.5 for layer in range(2, 6)}))]:
        state = apply_pruning(model, plan)
        state.record = True
        with torch.no_grad():
            _, per_module = count_flops(model, **batch)
        encoder_flops = per_module["BertForSequenceClassification.bert.encoder"]
        analytical = 2 * encoder_macs(dims, state.last.computed_lengths)
        assert encoder_flops == pytest.approx(analytical, rel=0.02)
        measured[name] = encoder_flops
    assert measured["pruned"] <= 0.6 * measured["dense"]
