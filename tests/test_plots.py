import torch

from toprune import PruningPlan
from toprune.plots import plot_metric_vs_flops, plot_tokens_per_layer, survivors_html


def test_plots_are_written(tmp_path):
    plan = PruningPlan.from_keep_ratios(4, {2: 0.5})
    kept = torch.tensor([[1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 0.6, 0.6]])
    assert plot_tokens_per_layer(plan, kept, tmp_path / "a.png").stat().st_size > 1000
    rows = [
        {"method": "top", "metric": 84.0, "flops_reduction_unpadded": 2.0},
        {"method": "top", "metric": 80.0, "flops_reduction_unpadded": 3.0},
    ]
    assert plot_metric_vs_flops(rows, tmp_path / "b.png", "F1").stat().st_size > 1000
    assert plot_metric_vs_flops(rows, tmp_path / "c.png", "F1", reference=85.0).stat().st_size > 1000


def test_survivors_html_fades_removed_words():
    html = survivors_html(["[CLS]", "a", "<b>"], depth=[3, 1, 3], num_layers=3)
    assert html.count("<tr>") == 3 and "&lt;b&gt;" in html
    assert html.count("opacity:0.15") == 2  # "a" is gone at layers 1 and 2
