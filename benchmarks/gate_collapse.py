"""Gate collapse (issue 18, item 3): short STS-B ToP runs, gate initialisations and ablations side by side.

    python benchmarks/gate_collapse.py train runs/stsb-teacher-quick [variant ...]   # one run per variant
    python benchmarks/gate_collapse.py report                # -> results/gate_collapse.{json,png}

Every variant shares the schedule (2 epochs, ramp over 1, 3,000 training examples, 2x unpadded target, seed 57) and
differs only in the settings listed in VARIANTS. Runs log their constraint state every step (metrics.jsonl "trace");
the report reads it: expected sparsity against the ramp target, multipliers, layer-gate probabilities, the kept
checkpoint (chosen on the held-out selection slice) and its one dev evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE.parent / "runs" / "gate_collapse"
SCHEDULE = dict(
    task="stsb",
    target="2x",
    epochs=2.0,
    warmup_epochs=1.0,
    max_train_samples=3000,
    eval_every=25,
    save_every=1000,
    seed=57,
)
VARIANTS = {
    # the old defaults: the authors' gate initialisation (layer gates start off, P(on) ~ 0.2) and plain ascent
    "old_defaults": dict(gate_init=-3.0, lambda_anti_windup=False),
    "new_defaults": dict(),  # layer gates start on, lambda1 anti-windup
    "new_no_layer_gates": dict(layer_gates=False),  # fine masks only, otherwise the new defaults
    "old_init_anti_windup": dict(gate_init=-3.0),  # attribution: the multiplier fix alone
    "new_init_plain_ascent": dict(lambda_anti_windup=False),  # attribution: the initialisation alone
}


def train(teacher: str, names: list[str], data_dir: str) -> None:
    from toprune.prune import PruneConfig, ToPRun

    for name in names or list(VARIANTS):
        cfg = PruneConfig(
            teacher=teacher,
            data_dir=data_dir,
            output_dir=str(RUNS / name),
            overwrite=True,
            **SCHEDULE,
            **VARIANTS[name],
        )
        ToPRun(cfg).run()


def _trace(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        fields = r.get("trace_fields")
        rows += [dict(zip(fields, row)) for row in r.get("trace", [])] if fields else []
    return rows


def summarise(run: Path) -> dict:
    from dataclasses import asdict

    from toprune.prune_config import PruneConfig

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    finished = (run / "summary.json").is_file()
    if finished:
        summary = json.loads((run / "summary.json").read_text())
    else:  # still training: the best evaluation so far, no dev number yet
        met = [r for r in records if r.get("sel_meets_target")]
        best = max(met, key=lambda r: r["sel_metric"], default=None)
        cfg = asdict(PruneConfig(teacher="", data_dir="", output_dir="", **SCHEDULE, **VARIANTS[run.name]))
        summary = {
            "config": cfg,
            "steps": records[-1]["step"],
            "dev": None,
            "best": best
            and {
                "step": best["step"],
                "metric": best["sel_metric"],
                "keep_ratio_per_layer": best["sel_keep_ratio_per_layer"],
                "flops_reduction_unpadded": best["sel_flops_reduction_unpadded"],
            },
        }
    trace = _trace(records)
    cfg = summary["config"]
    ramp = [t for t in trace if t["target_sparsity"] < (1 - 1 / float(cfg["target"].rstrip("x"))) - 1e-9]
    gaps = [t["expected_sparsity"] - t["target_sparsity"] for t in trace]
    ramp_gaps = [t["expected_sparsity"] - t["target_sparsity"] for t in ramp]
    best, dev = summary.get("best") or {}, summary.get("dev") or {}
    return {
        "run": run.name,
        "finished": finished,
        "settings": {
            k: cfg.get(k)
            for k in (
                "gate_init",
                "layer_gates",
                "lambda_anti_windup",
                "gate_lr",
                "lambda_lr",
                "epochs",
                "warmup_epochs",
                "max_train_samples",
                "target",
                "seed",
            )
        },
        "steps": summary["steps"],
        "sparsity_vs_target": {
            "max_overshoot": max(gaps),
            "max_lag": -min(gaps),
            "mean_abs_gap_ramp": sum(map(abs, ramp_gaps)) / max(1, len(ramp_gaps)),
            "mean_abs_gap_after_ramp": sum(abs(g) for g in gaps[len(ramp_gaps) :]) / max(1, len(gaps) - len(ramp_gaps)),
            "final_gap": gaps[-1],
            "min_lambda1": min(t["lambda1"] for t in trace),
            "max_lambda1": max(t["lambda1"] for t in trace),
            "final_lambda2": trace[-1]["lambda2"],
        },
        "evaluations": [
            {
                "step": r["step"],
                "expected_sparsity": round(r["expected_sparsity"], 4),
                "target_sparsity": round(r["target_sparsity"], 4),
                "lambda1": round(r["lambda1"], 3),
                "layer_gate_prob": r.get("gate_prob"),
                "bin_keep_prob": r.get("bin_keep"),
                "sel_metric": r.get("sel_metric"),
                "sel_meets_target": r.get("sel_meets_target"),
                "sel_flops_reduction_unpadded": r.get("sel_flops_reduction_unpadded"),
                "sel_keep_ratio_per_layer": r.get("sel_keep_ratio_per_layer"),
            }
            for r in records
        ],
        "kept": {
            "step": best.get("step"),
            "selection_metric": best.get("metric"),
            "keep_ratio_per_layer": best.get("keep_ratio_per_layer"),
            "flops_reduction_unpadded": best.get("flops_reduction_unpadded"),
        },
        "final_layer_gate_prob": records[-1].get("gate_prob"),
        "dev_metric": dev.get("metric"),
        "dev_flops_reduction_unpadded": dev.get("flops_reduction_unpadded"),
        "selection": summary.get("selection"),
        "trace": trace,
    }


def report(out_json: Path, out_png: Path) -> None:
    order = {name: i for i, name in enumerate(VARIANTS)}
    runs = [
        summarise(run)
        for run in sorted(RUNS.iterdir(), key=lambda r: order.get(r.name, len(order)))
        if (run / "metrics.jsonl").is_file()
    ]
    if not runs:
        sys.exit(f"no finished runs under {RUNS}")
    out_json.write_text(
        json.dumps({"note": __doc__.strip().splitlines()[0], "schedule": SCHEDULE, "runs": runs}, indent=1) + "\n"
    )
    for r in runs:
        s = r["sparsity_vs_target"]
        print(
            f"{r['run']:22s} sel {r['kept']['selection_metric']} dev {r['dev_metric']} kept step {r['kept']['step']} "
            f"keep {r['kept']['keep_ratio_per_layer']} overshoot {s['max_overshoot']:+.3f} lag {s['max_lag']:.3f} "
            f"|gap| ramp {s['mean_abs_gap_ramp']:.3f} min lambda1 {s['min_lambda1']:.2f}"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(runs), figsize=(4.2 * len(runs), 6.5), sharex=True, squeeze=False)
    for col, r in enumerate(runs):
        steps = [t["step"] for t in r["trace"]]
        ax = axes[0][col]
        ax.plot(steps, [t["target_sparsity"] for t in r["trace"]], "k--", label="ramp target")
        ax.plot(steps, [t["expected_sparsity"] for t in r["trace"]], label="expected sparsity")
        sel, dev = r["kept"]["selection_metric"], r["dev_metric"]
        ax.set_title(
            r["run"]
            + (f"\nselection {sel:.1f}" if sel is not None else "\nno evaluation met 2x")
            + (f", dev {dev:.1f}" if dev is not None else " (running)"),
            fontsize=9,
        )
        ax.set_ylim(0, 1)
        twin = ax.twinx()
        twin.plot(steps, [t["lambda1"] for t in r["trace"]], color="tab:red", alpha=0.5, label="lambda1")
        twin.tick_params(labelsize=7, colors="tab:red")
        twin.set_ylabel("lambda1", color="tab:red", fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
        gates = [t["gate_prob"] for t in r["trace"] if t.get("gate_prob")]
        if gates and r["settings"]["layer_gates"]:
            for p in range(len(gates[0])):
                axes[1][col].plot(steps[: len(gates)], [g[p] for g in gates], label=f"layer {p + 1}")
            axes[1][col].axhline(0.5, color="k", lw=0.5)
            axes[1][col].legend(fontsize=6, ncol=2)
        else:
            axes[1][col].text(0.5, 0.5, "no layer gates", ha="center", transform=axes[1][col].transAxes)
        axes[1][col].set_ylim(0, 1)
        axes[1][col].set_xlabel("step")
    axes[0][0].set_ylabel("FLOPs sparsity (expected)")
    axes[1][0].set_ylabel("P(layer gate on)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    print(f"wrote {out_json} and {out_png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("teacher")
    t.add_argument("variants", nargs="*", help=f"any of {', '.join(VARIANTS)} (default: all)")
    t.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "glue"))
    sub.add_parser("report")
    args = ap.parse_args()
    if args.cmd == "train":
        if set(args.variants) - set(VARIANTS):
            unknown = sorted(set(args.variants) - set(VARIANTS))
            sys.exit(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
        train(args.teacher, args.variants, args.data_dir)
    else:
        report(HERE / "results" / "gate_collapse.json", HERE / "results" / "gate_collapse.png")


if __name__ == "__main__":
    main()
