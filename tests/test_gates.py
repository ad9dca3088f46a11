import math

import pytest
import torch

from toprune.gates import LOG_ALPHA_MAX, LOG_ALPHA_MIN, HardConcreteGates, hard_concrete_sample, prob_nonzero


def test_prob_nonzero_closed_form():
    log_alpha = torch.tensor([-2.0, 0.0, 1.5])
    expected = torch.sigmoid(log_alpha + (2.0 / 3.0) * math.log(11.0))
    assert torch.allclose(prob_nonzero(log_alpha), expected)


def test_sampling_frequency_matches_prob_nonzero():
    log_alpha = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).repeat(20000, 1)
    z = hard_concrete_sample(log_alpha, torch.Generator().manual_seed(0))
    freq = (z > 0).float().mean(0)
    assert torch.allclose(freq, prob_nonzero(log_alpha[0]), atol=0.01)
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0
    assert float((z == 1).float().mean()) > 0.05  # the stretch puts real mass on exactly 1


def test_sample_is_differentiable():
    gates = HardConcreteGates(3, 5)
    bins, gate = gates.sample(torch.Generator().manual_seed(1))
    (bins.sum() + gate.sum()).backward()
    assert gates.bin_log_alpha.grad is not None and gates.gate_log_alpha.grad is not None
    assert set(gate.detach().tolist()) <= {0.0, 1.0}  # gates are binarised (straight-through)


def test_deterministic_drops_round_k_minus_expected_bins_with_smallest_logits():
    gates = HardConcreteGates(2, 4)
    with torch.no_grad():
        gates.bin_log_alpha[0] = torch.tensor([5.0, -5.0, 4.0, -6.0])  # P ~ [1, 0.02, 1, 0.01]
        gates.bin_log_alpha[1] = torch.tensor([5.0, 5.0, 5.0, 5.0])
        gates.gate_log_alpha[:] = torch.tensor([3.0, -5.0])
    kept, on = gates.deterministic()
    assert kept[0].tolist() == [True, False, True, False]
    assert kept[1].tolist() == [True, True, True, True]
    assert on.tolist() == [True, False]


def test_monotone_keeps_a_prefix():
    gates = HardConcreteGates(1, 4, monotone=True)
    with torch.no_grad():
        gates.bin_log_alpha[0] = torch.tensor([-6.0, 5.0, -6.0, 5.0])
    kept, _ = gates.deterministic()
    assert kept[0].tolist() == [True, True, False, False]
    bins, _ = gates.sample()
    assert torch.all(bins[0][:-1] >= bins[0][1:])  # sampled values are sorted, best bins largest


def test_expected_keep_ratio_and_no_gates_ablation():
    gates = HardConcreteGates(2, 3, bin_init=0.0, gate_init=0.0)
    p = float(prob_nonzero(torch.tensor(0.0)))
    assert torch.allclose(gates.expected_keep_ratios(), torch.full((2,), 1 - (1 - p) * p))
    fine_only = HardConcreteGates(2, 3, bin_init=0.0, use_layer_gates=False)
    assert torch.allclose(fine_only.expected_keep_ratios(), torch.full((2,), p))
    assert torch.all(fine_only.sample()[1] == 1)


def test_clamp():
    gates = HardConcreteGates(1, 2)
    with torch.no_grad():
        gates.bin_log_alpha.fill_(50.0)
        gates.gate_log_alpha.fill_(-50.0)
    gates.clamp_()
    assert gates.bin_log_alpha.detach().max().item() == pytest.approx(LOG_ALPHA_MAX)
    assert gates.gate_log_alpha.detach().min().item() == pytest.approx(LOG_ALPHA_MIN)
