"""Plots a person would rather look at than read: tokens kept per layer, metric vs FLOPs, surviving words."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .plan import PruningPlan  # noqa: E402


def plot_tokens_per_layer(plan: PruningPlan, kept_fractions: torch.Tensor | None, path: str | Path,
                          title: str = "") -> Path:
    """The plan's keep ratio for long inputs (cumulative) and, when given, the measured share of each dev
    example's tokens entering each layer (box per layer)."""
    layers = list(range(plan.num_layers))
    cumulative, r = [], 1.0
    for layer in layers:
        r *= plan.keep_ratio(layer)
        cumulative.append(r)
    fig, ax = plt.subplots(figsize=(7, 4))
    if kept_fractions is not None:
        ax.boxplot([kept_fractions[:, layer].numpy() for layer in layers], positions=layers, widths=0.5,
                   showfliers=False)
        ax.plot(layers, kept_fractions.mean(0).numpy(), "o-", color="tab:blue", label="measured on dev (mean)")
    ax.plot(layers, cumulative, "s--", color="tab:orange", label="plan, long inputs")
    ax.set_xticks(layers, [str(layer) for layer in layers])
    ax.set_ylim(0, 1.05)
    return _finish(fig, ax, path, "layer", "share of the example's tokens entering the layer",
                   title or "Tokens kept per layer")


def plot_metric_vs_flops(rows: list[dict], path: str | Path, metric_name: str, title: str = "",
                         connect: bool = True, reference: float | None = None) -> Path:
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
            for j, tok in enumerate(tokens))
        rows.append(f"<tr><td>layer {layer}</td><td>{cells}</td></tr>")
    return "<table style='font-family:monospace'>" + "".join(rows) + "</table>"
