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


def test_sample_follows_the_closed_form_with_noise_from_the_given_generator():
    """z = clamp(sigmoid((log u - log(1 - u) + log_alpha) / (2/3)) * 1.2 - 0.1, 0, 1), u drawn in the logits'
    dtype from the caller's generator: the same seed gives the same sample (training is reproducible)."""
    log_alpha = torch.linspace(-4.0, 4.0, 50, dtype=torch.float64)
    u = torch.rand(log_alpha.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = (torch.sigmoid((u.log() - (-u).log1p() + log_alpha) * 1.5) * 1.2 - 0.1).clamp(0, 1)
    got = hard_concrete_sample(log_alpha, torch.Generator().manual_seed(3))
    assert got.dtype == torch.float64 and torch.allclose(got, expected, rtol=0, atol=1e-12)
    other = hard_concrete_sample(log_alpha, torch.Generator().manual_seed(4))
    assert not torch.equal(got, other)


def test_gates_sample_bins_then_layer_gates_from_the_callers_generator():
    gates = HardConcreteGates(4, 6, bin_init=0.0, gate_init=0.5)
    first, again = gates.sample(torch.Generator().manual_seed(5)), gates.sample(torch.Generator().manual_seed(5))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    gen = torch.Generator().manual_seed(5)
    bins = hard_concrete_sample(gates.bin_log_alpha.detach(), gen)
    soft = hard_concrete_sample(gates.gate_log_alpha.detach(), gen)
    assert torch.equal(first[0].detach(), bins) and torch.allclose(first[1].detach(), (soft > 0).float())


def test_layer_gates_are_on_as_often_as_prob_nonzero_with_a_straight_through_gradient():
    gates = HardConcreteGates(20000, 1, gate_init=-1.0)
    _, on = gates.sample(torch.Generator().manual_seed(0))
    assert torch.allclose(on.detach(), (on.detach() > 0.5).float())  # binary, up to the rounding of 1 + s - s
    assert float(on.detach().mean()) == pytest.approx(float(prob_nonzero(torch.tensor(-1.0))), abs=0.02)
    on.sum().backward()
    # the straight-through gradient is the soft sample's: 0 where the gate was clamped, positive elsewhere
    log_alpha = gates.gate_log_alpha.detach().clone().requires_grad_()
    gen = torch.Generator().manual_seed(0)
    hard_concrete_sample(gates.bin_log_alpha.detach(), gen)  # the bins are drawn first
    hard_concrete_sample(log_alpha, gen).sum().backward()
    assert torch.allclose(gates.gate_log_alpha.grad, log_alpha.grad) and log_alpha.grad.max() > 0


def test_expected_keep_ratio_is_per_layer():
    gates = HardConcreteGates(2, 2)
    with torch.no_grad():
        gates.bin_log_alpha.copy_(torch.tensor([[4.0, -4.0], [1.0, 2.0]]))
        gates.gate_log_alpha.copy_(torch.tensor([0.5, -1.0]))
    bins, on = prob_nonzero(gates.bin_log_alpha.detach()), prob_nonzero(gates.gate_log_alpha.detach())
    expected = 1 - (1 - bins.mean(dim=1)) * on
    assert torch.allclose(gates.expected_keep_ratios().detach(), expected)


def test_default_initialisation_keeps_bins_and_opens_every_layer_gate():
    """bin logits start at 3 (P(kept) ~ 0.99: every token kept) and gate logits at +3 (P(prune) ~ 0.99: every layer
    may prune, so the bins, not the order in which gates open, decide where the budget goes)."""
    gates = HardConcreteGates(3, 4)
    assert torch.all(gates.bin_log_alpha == 3.0) and torch.all(gates.gate_log_alpha == 3.0)
    kept, on = gates.deterministic()
    assert kept.all() and on.all()
    assert torch.all(gates.expected_keep_ratios() > 0.98)
