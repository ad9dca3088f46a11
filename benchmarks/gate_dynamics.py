"""Gates + Lagrangian alone, no encoder: does the expected sparsity track its ramp, and do layer gates collapse?

The same pieces as ``ToPRun.train_step`` (HardConcreteGates, expected_relative_macs, lagrangian, AdamW on gates and
multipliers, ascent by a negated gradient, clamp after each step), with the encoder replaced by a fake task loss
that prefers keeping tokens: losing a token costs more the better it ranks and the earlier it goes (its loss
propagates through every later layer). The loss sees the *sampled* masks, as the real task loss does.

    python benchmarks/gate_dynamics.py            # -> a table of variants (seconds, one core)
"""

from __future__ import annotations

import argparse
import json

import torch

from toprune.flops import EncoderDims, expected_relative_macs
from toprune.gates import HardConcreteGates
from toprune.losses import ascend_multipliers_, lagrangian

MINILM = EncoderDims(num_layers=6, hidden=384, ffn=1536, heads=12)


def fake_task_loss(bins: torch.Tensor, gates: torch.Tensor, scale: float) -> torch.Tensor:
    """sum over pruning layers p and bins b of c_p * w_b * (1 - token group b still alive after layer p):
    w_b falls with the rank (bin 0 holds the best tokens), c_p with depth (an early drop hurts every later layer)."""
    num_layers, k = bins.shape
    keep = 1.0 - (1.0 - bins) * gates[:, None]
    alive = torch.cumprod(keep, dim=0)
    w = torch.exp(-torch.arange(k, dtype=bins.dtype) / (k / 4))
    c = torch.linspace(1.0, 0.2, num_layers, dtype=bins.dtype)
    return scale * (c[:, None] * w[None, :] * (1.0 - alive)).sum() / w.sum()


def simulate(
    steps: int = 190,
    ramp: int = 95,
    target_sparsity: float = 0.5,
    gate_lr: float = 0.05,
    lambda_lr: float = 0.05,
    gate_init: float = -3.0,
    bin_init: float = 3.0,
    layer_gates: bool = True,
    task_scale: float = 1.0,
    seed: int = 0,
    mean_length: float = 31.0,
    num_bins: int = 20,
    lambda_optimizer: str = "adamw",
    anti_windup: bool = False,
    ramp_start: str = "zero",
) -> dict:
    torch.manual_seed(seed)
    layers = list(range(1, MINILM.num_layers))
    gates = HardConcreteGates(
        len(layers), num_bins, bin_init=bin_init, gate_init=gate_init, use_layer_gates=layer_gates
    )
    lambdas = torch.nn.Parameter(torch.zeros(2))
    gate_opt = torch.optim.AdamW(gates.parameters(), lr=gate_lr, weight_decay=0.0)
    lambda_opt = (
        torch.optim.AdamW([lambdas], lr=lambda_lr, weight_decay=0.0)
        if lambda_optimizer == "adamw"
        else torch.optim.SGD([lambdas], lr=lambda_lr)
    )
    sampler = torch.Generator().manual_seed(seed)
    trace = []
    for step in range(steps):
        lengths = (torch.randn(32, generator=sampler) * 8 + mean_length).clamp(8, 120).round()
        bins, g = gates.sample(sampler)
        task = fake_task_loss(bins, g, task_scale)
        progress = min(1.0, step / ramp)
        rel = expected_relative_macs(MINILM, gates.expected_keep_ratios(), layers, lengths)
        if step == 0:  # --ramp-start initial: the ramp starts at the initial masks' expected sparsity
            start = min(1.0 - rel.item(), target_sparsity) if ramp_start == "initial" else 0.0
        target = start + (target_sparsity - start) * progress
        loss = task + lagrangian(1.0 - rel, target, lambdas)
        gate_opt.zero_grad()
        lambda_opt.zero_grad()
        loss.backward()
        gate_opt.step()
        ascend_multipliers_(lambdas, lambda_opt, anti_windup)
        gates.clamp_()
        bin_p, gate_p = gates.keep_probs()
        kept, on = gates.deterministic()
        trace.append(
            {
                "step": step + 1,
                "target": target,
                "expected_sparsity": 1.0 - rel.item(),
                "lambda1": lambdas[0].item(),
                "lambda2": lambdas[1].item(),
                "gate_prob": [round(x, 3) for x in gate_p.tolist()],
                "bin_keep": [round(x, 3) for x in bin_p.mean(1).tolist()],
                "gate_on": on.tolist(),
                "kept_bins": kept.sum(1).tolist(),
            }
        )
    return {"trace": trace, **summarise(trace, ramp)}


def summarise(trace: list[dict], ramp: int) -> dict:
    """Tracking error during the ramp, overshoot, final plan."""
    gaps = [t["expected_sparsity"] - t["target"] for t in trace]
    in_ramp = gaps[:ramp]
    last = trace[-1]
    return {
        "max_overshoot": max(gaps),
        "max_lag": -min(gaps),
        "mean_abs_gap_ramp": sum(map(abs, in_ramp)) / len(in_ramp),
        "final_gap": gaps[-1],
        "min_lambda1": min(t["lambda1"] for t in trace),
        "final_gate_prob": last["gate_prob"],
        "final_bin_keep": last["bin_keep"],
        "final_gate_on": last["gate_on"],
        "final_kept_bins": last["kept_bins"],
        "min_gate_prob_end": min(last["gate_prob"]),
        # steps at which the deterministic plan has some layers' gates on and others off: the fitted plan must then
        # take the whole budget from the open layers
        "partial_gate_steps": sum(0 < sum(t["gate_on"]) < len(t["gate_on"]) for t in trace),
        "gate_flips": sum(a != b for t0, t1 in zip(trace, trace[1:]) for a, b in zip(t0["gate_on"], t1["gate_on"])),
    }


VARIANTS = {
    "old defaults (gates start off, plain ascent)": {"gate_init": -3.0},
    "new defaults (gates start on, anti-windup)": {"gate_init": 3.0, "anti_windup": True},
    "old gate init + anti-windup": {"gate_init": -3.0, "anti_windup": True},
    "new gate init + plain ascent": {"gate_init": 3.0},
    "no layer gates + anti-windup": {"layer_gates": False, "anti_windup": True},
    "new defaults, ramp x3": {"gate_init": 3.0, "anti_windup": True, "ramp": 285, "steps": 380},
    "new defaults, ramp from the initial masks": {"gate_init": 3.0, "anti_windup": True, "ramp_start": "initial"},
}
SCALES = (0.03, 0.3, 3.0)  # task-loss weight against the constraint: the real one is unknown, so a wide range


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write every variant's summary (no traces) here")
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    out = []
    for scale in SCALES:
        for name, kw in VARIANTS.items():
            runs = [simulate(seed=s, task_scale=scale, **kw) for s in range(args.seeds)]
            keys = (
                "max_overshoot",
                "max_lag",
                "mean_abs_gap_ramp",
                "final_gap",
                "min_lambda1",
                "gate_flips",
                "partial_gate_steps",
            )
            row = {
                "variant": name,
                "task_scale": scale,
                "settings": kw,
                "seeds": args.seeds,
                **{k: round(sum(r[k] for r in runs) / len(runs), 4) for k in keys},
                "gate_on_mid_run": [r["trace"][len(r["trace"]) // 2]["gate_on"] for r in runs],
                "final_gate_on": [r["final_gate_on"] for r in runs],
                "final_kept_bins": [r["final_kept_bins"] for r in runs],
            }
            out.append(row)
            print(f"scale {scale:<5} {name:46s} " + " ".join(f"{k}={row[k]:+.3f}" for k in keys), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"note": __doc__.strip().splitlines()[0], "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
