import pytest
import torch

from toprune import EncoderDims, PruningPlan, apply_pruning, batch_flops, encoder_macs, expected_relative_macs
from toprune import ToPruneError
from toprune.flops import count_flops, dense_macs, layer_macs, min_relative_macs, parse_target
from toprune.static import plan_relative_macs

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
    half = PruningPlan.from_keep_ratios(6, {layer: 0.5 for layer in range(2, 6)})
    for name, plan in [("dense", None), ("pruned", half)]:
        state = apply_pruning(model, plan)
        state.record = True
        with torch.no_grad():
            _, per_module = count_flops(model, **batch)
        encoder_flops = per_module["BertForSequenceClassification.bert.encoder"]
        analytical = 2 * encoder_macs(dims, state.last.computed_lengths)
        assert encoder_flops == pytest.approx(analytical, rel=0.02)
        measured[name] = encoder_flops
    assert measured["pruned"] <= 0.6 * measured["dense"]


def test_dims_fall_back_to_hidden_dim_for_configs_without_intermediate_size():
    from types import SimpleNamespace

    config = SimpleNamespace(num_hidden_layers=2, hidden_size=8, hidden_dim=24, num_attention_heads=2)
    assert EncoderDims.from_config(config) == EncoderDims(2, 8, 24, 2)


def test_encoder_macs_runs_each_ffn_on_the_next_layers_tokens():
    dims = EncoderDims(3, 4, 8, 2)
    assert encoder_macs(dims, [10, 5, 3]) == (layer_macs(dims, 10, 5) + layer_macs(dims, 5, 3) + layer_macs(dims, 3, 3))
    assert dense_macs(dims, 7) == 3 * layer_macs(dims, 7, 7)


def test_expected_macs_against_a_padded_reference():
    dims = EncoderDims(4, 16, 64, 2)
    ratios = torch.tensor([0.5, 0.5], dtype=torch.float64)
    lengths = torch.tensor([20, 40])  # integer lengths, as a batch's mask sums are
    counts = [[n, n, (n - 1) * 0.5 + 1, (n - 1) * 0.25 + 1] for n in (20, 40)]
    unpadded = expected_relative_macs(dims, ratios, [2, 3], lengths)
    padded = expected_relative_macs(dims, ratios, [2, 3], lengths, reference_lengths=64)
    assert float(unpadded) == pytest.approx(sum(encoder_macs(dims, c) / dense_macs(dims, c[0]) for c in counts) / 2)
    assert float(padded) == pytest.approx(sum(encoder_macs(dims, c) / dense_macs(dims, 64) for c in counts) / 2)
    assert unpadded.dtype == torch.float64


def test_min_relative_macs_keeps_only_cls_from_the_first_pruning_layer():
    """Total over total, as plans are judged (plan_relative_macs of the CLS-only plan), not the mean of ratios."""
    dims = EncoderDims(4, 16, 64, 2)
    lengths = torch.tensor([3, 50])
    expected = sum(encoder_macs(dims, [n, n, 1, 1]) for n in (3, 50)) / sum(dense_macs(dims, n) for n in (3, 50))
    assert min_relative_macs(dims, [2, 3], lengths) == pytest.approx(expected, rel=1e-12)
    mean_of_ratios = sum(encoder_macs(dims, [n, n, 1, 1]) / dense_macs(dims, n) for n in (3, 50)) / 2
    assert min_relative_macs(dims, [2, 3], lengths) < mean_of_ratios  # the long example weighs in by its cost
    cls_only = PruningPlan.from_keep_ratios(4, {2: 0.0})
    assert min_relative_macs(dims, [2, 3], [3, 50]) == pytest.approx(plan_relative_macs(dims, cls_only, [3, 50]))
    padded = sum(encoder_macs(dims, [n, n, 1, 1]) for n in (3, 50)) / (2 * dense_macs(dims, 128))
    assert min_relative_macs(dims, [2, 3], lengths, 128) == pytest.approx(padded)


def test_batch_flops_counts_every_example_of_the_batch_and_reports_add_up():
    dims = EncoderDims(2, 4, 8, 1)
    counts = torch.tensor([[10, 5], [4, 2], [6, 6]])  # 3 examples, 2 layers
    report = batch_flops(dims, counts, padded_length=16)
    assert report.dense_padded_macs == 3 * dense_macs(dims, 16)
    other = batch_flops(dims, torch.tensor([[20, 10]]), padded_length=24)
    total = report + other
    assert total.pruned_macs == report.pruned_macs + other.pruned_macs
    assert total.dense_unpadded_macs == report.dense_unpadded_macs + other.dense_unpadded_macs
    assert total.dense_padded_macs == report.dense_padded_macs + other.dense_padded_macs
    assert total.padded_length == 24 and (other + report).padded_length == 24


@pytest.mark.parametrize(
    "text, relative", [("2x", 0.5), ("2.5x", 0.4), ("12X", 1 / 12), (" 1x ", 1.0), ("0.6", 0.4), ("0", 1.0)]
)
def test_parse_target_reductions_and_sparsities(text, relative):
    assert parse_target(text) == pytest.approx(relative)


@pytest.mark.parametrize("text", ["0.9x", "infx", "nanx", "1", "1.5", "-0.1", "nan", "fast", "x"])
def test_parse_target_refuses_nonsense_in_one_line(text):
    with pytest.raises(ToPruneError, match=r"bad FLOPs target .*give a reduction like 2.5x or a sparsity in \[0, 1\)"):
        parse_target(text)


def test_count_flops_counts_cpu_sdpa_attention():
    """PyTorch's counter has no formula for the fused CPU SDPA kernel: without ours, attention would count 0."""
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    total, _ = count_flops(torch.nn.functional.scaled_dot_product_attention, q, k, v)
    assert total == 2 * (2 * 2 * 3 * 7 * 7 * 8)  # two batched matmuls (QK^T, PV), 2 FLOPs per MAC
