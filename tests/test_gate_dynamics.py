"""Gates + Lagrangian alone, stepped as ToPRun.train_step steps them (AdamW on the logits, ascent on the multipliers,
clamp), with a fake task loss that prefers keeping tokens instead of an encoder: the two failure modes of the old
defaults (layer gates that open one at a time, multiplier overshoot) and that the new defaults avoid them."""

import torch

from toprune.flops import EncoderDims, expected_relative_macs
from toprune.gates import HardConcreteGates
from toprune.losses import anti_windup_, ascend_multipliers_, lagrangian

DIMS = EncoderDims(num_layers=6, hidden=64, ffn=256, heads=4)


def _fake_task(bins, gates, scale):
    """Losing a token costs more the better it ranks (low bin) and the earlier it goes (low layer)."""
    alive = torch.cumprod(1.0 - (1.0 - bins) * gates[:, None], dim=0)
    w = torch.exp(-torch.arange(bins.shape[1], dtype=bins.dtype) / (bins.shape[1] / 4))
    c = torch.linspace(1.0, 0.2, bins.shape[0], dtype=bins.dtype)
    return scale * (c[:, None] * w * (1.0 - alive)).sum() / w.sum()


def _simulate(scale, steps=160, ramp=80, target=0.5, lr=0.05, anti_windup=True, **gate_kw):
    torch.manual_seed(0)
    layers = list(range(1, DIMS.num_layers))
    gates = HardConcreteGates(len(layers), 20, **gate_kw)
    lambdas = torch.nn.Parameter(torch.zeros(2))
    gate_opt = torch.optim.AdamW(gates.parameters(), lr=lr, weight_decay=0.0)
    lambda_opt = torch.optim.AdamW([lambdas], lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    trace = []
    for step in range(steps):
        lengths = (torch.randn(16, generator=gen) * 8 + 31).clamp(8, 120).round()
        t = target * min(1.0, step / ramp)
        bins, on = gates.sample(gen)
        rel = expected_relative_macs(DIMS, gates.expected_keep_ratios(), layers, lengths)
        loss = _fake_task(bins, on, scale) + lagrangian(1.0 - rel, t, lambdas)
        gate_opt.zero_grad()
        lambda_opt.zero_grad()
        loss.backward()
        gate_opt.step()
        ascend_multipliers_(lambdas, lambda_opt, anti_windup)
        gates.clamp_()
        trace.append((1.0 - rel.item() - t, gates.deterministic()[1].clone(), lambdas[0].item()))
    return trace


def test_authors_gate_init_opens_layers_one_at_a_time_and_default_init_keeps_every_layer_prunable():
    """Gates that start off (logit -3) switch on a few layers first; the deterministic plan then has to take the
    whole budget from those layers (gate collapse). Gates that start on stay on unless the task turns them off."""
    old = _simulate(0.3, gate_init=-3.0, anti_windup=False)
    assert any(0 < int(on.sum()) < len(on) for _, on, _ in old)
    new = _simulate(0.3)
    assert all(bool(on.all()) for _, on, _ in new)


def test_plain_ascent_overshoots_the_ramp_and_anti_windup_tracks_it():
    old = _simulate(0.03, anti_windup=False)
    new = _simulate(0.03)
    assert max(g for g, _, _ in old) > 0.2  # lambda1 wound up while the saturated logits lagged, then overshot
    assert max(g for g, _, _ in new) < 0.12
    assert abs(new[-1][0]) < 0.05  # and it ends on the target


def test_anti_windup_keeps_lambda1_on_the_side_of_the_gap():
    lambdas = torch.tensor([-2.0, 1.0])
    anti_windup_(lambdas, 0.1)  # sparsity above the target: a negative lambda1 would push it further up
    assert lambdas.tolist() == [0.0, 1.0]
    lambdas = torch.tensor([-2.0, 1.0])
    anti_windup_(lambdas, -0.1)  # below: lambda1 <= 0 pushes it up, kept
    assert lambdas.tolist() == [-2.0, 1.0]
    lambdas = torch.tensor([3.0, 1.0])
    anti_windup_(lambdas, -0.1)
    assert lambdas.tolist() == [0.0, 1.0]


def test_cli_keeps_the_authors_gate_dynamics_behind_options():
    from toprune.cli import build_parser
    from toprune.commands import _prune_config

    parse = build_parser().parse_args
    default = _prune_config(parse(["prune", "--teacher", "t", "--output", "o"]), "t", "o", "d")
    authors = _prune_config(
        parse(["prune", "--teacher", "t", "--output", "o", "--gate-init", "-3", "--no-lambda-anti-windup"]),
        "t",
        "o",
        "d",
    )
    assert default.gate_init > 0 and default.lambda_anti_windup
    assert authors.gate_init == -3.0 and not authors.lambda_anti_windup
