"""Plots a person would rather look at than read: tokens kept per layer, metric vs FLOPs, surviving words."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .plan import PruningPlan  # noqa: E402


def plot_tokens_per_layer(
    plan: PruningPlan, kept_fractions: torch.Tensor | None, path: str | Path, title: str = ""
) -> Path:
    """The plan's keep ratio for long inputs (cumulative) and, when given, the measured share of each dev
    example's tokens entering each layer (box per layer)."""
    layers = list(range(plan.num_layers))
    cumulative, r = [], 1.0
    for layer in layers:
        r *= plan.keep_ratio(layer)
        cumulative.append(r)
    fig, ax = plt.subplots(figsize=(7, 4))
    if kept_fractions is not None:
        ax.boxplot(
            [kept_fractions[:, layer].numpy() for layer in layers], positions=layers, widths=0.5, showfliers=False
        )
        ax.plot(layers, kept_fractions.mean(0).numpy(), "o-", color="tab:blue", label="measured on dev (mean)")
    ax.plot(layers, cumulative, "s--", color="tab:orange", label="plan, long inputs")
    ax.set_xticks(layers, [str(layer) for layer in layers])
    ax.set_ylim(0, 1.05)
    return _finish(
        fig, ax, path, "layer", "share of the example's tokens entering the layer", title or "Tokens kept per layer"
    )


def plot_metric_vs_flops(
    rows: list[dict],
    path: str | Path,
    metric_name: str,
    title: str = "",
    connect: bool = True,
    reference: float | None = None,
) -> Path:
    """One series per method: rows carry ``method``, ``metric`` and ``flops_reduction_unpadded``.
    ``connect=False`` draws points only (e.g. the successive evaluations of one run, which are no curve);
    ``reference`` (the dense teacher's metric) is drawn as a dashed line: the level a pruned model should keep."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", label="dense teacher")
    for method in sorted({r["method"] for r in rows}):
        points = sorted((r["flops_reduction_unpadded"], r["metric"]) for r in rows if r["method"] == method)
        ax.plot(*zip(*points), "o-" if connect else "o", label=method)
    return _finish(fig, ax, path, "FLOPs reduction vs dense, unpadded (x)", metric_name, title)


def plot_run_history(
    runs: list[dict], path: str | Path, metric_label: str, reference: float | None = None, title: str = ""
):
    """Every evaluation of one or more pruning runs, in two panels: the metric vs the measured FLOPs reduction
    (where late evaluations pile up at the target) and the metric vs the step (which spreads them out). ``runs``:
    dicts with ``name``, ``points`` (``step``, ``metric``, ``flops_reduction_unpadded``) and ``kept_step`` (the
    checkpoint kept, or None). ``reference``, the dense teacher's metric, is a dashed line in both panels and the
    1.0x point. Returns the matplotlib figure (already written to ``path``)."""
    fig, (by_flops, by_step) = plt.subplots(1, 2, figsize=(11, 4.2))
    if reference is not None:
        for ax in (by_flops, by_step):
            ax.axhline(reference, color="grey", linestyle="--", label=f"dense teacher ({reference:.2f})")
        by_flops.plot([1.0], [reference], "D", color="grey")
    for run in runs:
        points = sorted(run["points"], key=lambda r: r["step"])
        steps = [r["step"] for r in points]
        metrics = [r["metric"] for r in points]
        flops = [r["flops_reduction_unpadded"] for r in points]
        (line,) = by_flops.plot(flops, metrics, "o", alpha=0.6, label=f"{run['name']}: every evaluation")
        by_step.plot(steps, metrics, "o-", color=line.get_color(), alpha=0.8, label=run["name"])
        kept = [r for r in points if r["step"] == run.get("kept_step")]
        if kept:
            k = kept[0]
            label = f"{run['name']}: kept, step {k['step']} ({k['metric']:.2f} at {k['flops_reduction_unpadded']:.2f}x)"
            for ax, x in ((by_flops, k["flops_reduction_unpadded"]), (by_step, k["step"])):
                ax.plot(
                    [x], [k["metric"]], "*", markersize=16, color=line.get_color(), markeredgecolor="black", label=label
                )
                ax.annotate(
                    f"kept (step {k['step']})",
                    (x, k["metric"]),
                    textcoords="offset points",
                    xytext=(6, -14),
                    fontsize=8,
                )
    _style(by_step, "training step", metric_label, "by step")
    _style(by_flops, "FLOPs reduction vs dense, unpadded (x)", metric_label, "by FLOPs reduction")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def _style(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _finish(fig, ax, path, xlabel: str, ylabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def survivors_html(tokens: list[str], depth: list[int], num_layers: int) -> str:
    """One sentence, one row per layer: words still present are dark, removed ones faded.
    ``depth[j]`` is the number of layers token j entered (num_layers = survived to the end)."""
    rows = []
    for layer in range(num_layers):
        cells = "".join(
            f'<span style="opacity:{1.0 if depth[j] > layer else 0.15}">{html.escape(tok)}</span> '
            for j, tok in enumerate(tokens)
        )
        rows.append(f"<tr><td>layer {layer}</td><td>{cells}</td></tr>")
    return "<table style='font-family:monospace'>" + "".join(rows) + "</table>"
