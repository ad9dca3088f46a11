"""INT8 that stacks with pruning, OpenVINO as a second backend, and the accuracy-vs-latency frontier (tiny models)."""

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import pytest

import toprune
from toprune import PruningPlan, apply_pruning
from toprune.export import export_folder
from toprune.quantize import VARIANTS, matmul_roles, quantize_variant
from toprune.serve import OnnxModel, make_session

from .conftest import tiny_bert_with_tokenizer, write_small_glue

pytest.importorskip("openvino")
pytest.importorskip("nncf")

# layers 1-3 prune, so the attention of layers 0-2 ranks tokens (score layers); layer 3's attention decides nothing
PLAN = PruningPlan.from_keep_ratios(4, {1: 0.6, 2: 0.5, 3: 0.5}, num_bins=10)
TEXTS = [
    "The cat sat on the mat while the dog slept.",
    "Tokens are removed layer by layer, per example.",
    "Hi",
    "A committee published the long report after a delay of several months.",
]
PAIRS = ["A cat was sitting.", "Later layers run on fewer tokens.", "Hello there, how are you today?", "It was late."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Dense and pruned tiny BERTs (real MiniLM tokenizer) saved with a task, their exports, and small GLUE data."""
    root = tmp_path_factory.mktemp("int8")
    for name, plan in (("dense", None), ("top", PLAN)):
        model, tokenizer = tiny_bert_with_tokenizer()
        if plan is None:
            model.save_pretrained(root / name)
            tokenizer.save_pretrained(root / name)
        else:
            plan.meta.update(method="top", target="2x")
            apply_pruning(model, plan)
            toprune.save_pruned(model, root / name, tokenizer)
        export_folder(str(root / name), root / f"{name}-export")
    write_small_glue(root, train_rows=80, dev_rows=24)
    return root


def _feeds(folder, n=2):
    served = OnnxModel(folder)
    return [
        {
            k: np.asarray(v, dtype=np.int64)
            for k, v in served.tokenizer(
                TEXTS[i:] + TEXTS[:i], PAIRS, padding=True, truncation=True, max_length=64, return_tensors="np"
            ).items()
        }
        for i in range(n)
    ]


def test_openvino_f32_matches_onnxruntime_and_bf16_is_measured(tiny):
    for name in ("dense", "top"):
        ort = OnnxModel(tiny / f"{name}-export")
        ov = OnnxModel(tiny / f"{name}-export", backend="openvino", precision="f32")
        assert ov.parity["max_abs_diff"] <= 1e-4 and ov.parity["changed_predictions"] == 0
        assert [p["label"] for p in ov.predict(TEXTS, pairs=PAIRS)] == [
            p["label"] for p in ort.predict(TEXTS, pairs=PAIRS)
        ]
        assert np.allclose(
            [p["score"] for p in ov.predict(TEXTS, pairs=PAIRS)],
            [p["score"] for p in ort.predict(TEXTS, pairs=PAIRS)],
            atol=1e-5,
        )
    # bf16 of the pruned graph: the share of changed predictions is measured (token selection may flip); where
    # OpenVINO really runs bf16, the logits move
    bf16 = OnnxModel(tiny / "top-export", backend="openvino", precision="bf16")
    assert 0.0 <= bf16.parity["changed_share"] <= 1.0 and bf16.parity["examples"] == len(TEXTS)
    if "bf16" in bf16.session.hint or "bfloat16" in bf16.session.hint:
        assert bf16.parity["max_abs_diff"] > 0
    print("tiny pruned graph, OpenVINO bf16 vs ONNX Runtime f32:", bf16.parity)
    with pytest.raises(toprune.ToPruneError, match="no model.ov_int8.xml"):
        OnnxModel(tiny / "top-export", backend="openvino", precision="int8")
    with pytest.raises(toprune.ToPruneError, match="unknown backend"):
        OnnxModel(tiny / "top-export", backend="tensorrt")


def test_openvino_serving_needs_no_torch(tiny):
    code = (
        "import sys\nfrom toprune.serve import OnnxModel\n"
        f"m = OnnxModel({str(tiny / 'top-export')!r}, backend='openvino', precision='f32')\n"
        "print(m.predict(['The cat sat.'], pairs=['A cat.'])[0]['label'])\n"
        "print(sorted(k for k in ('torch', 'transformers') if k in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "[]"


def test_roles_are_found_from_the_graph(tiny):
    """3 score layers x (Q, K); the last layer's Q/K rank nothing; one V, attention output and FFN pair per layer."""
    pruned = Counter(matmul_roles(onnx.load(str(tiny / "top-export" / "model.onnx"))).values())
    assert pruned == {"qk_score": 6, "qk": 2, "v": 4, "attn_out": 4, "ffn_in": 4, "ffn_out": 4, "other": 2}
    dense = Counter(matmul_roles(onnx.load(str(tiny / "dense-export" / "model.onnx"))).values())
    assert "qk_score" not in dense and dense["ffn_in"] == dense["ffn_out"] == 4


def test_every_int8_variant_writes_a_graph_that_runs_close_to_fp32(tiny, tmp_path):
    source = tiny / "top-export" / "model.onnx"
    feeds = _feeds(tiny / "top-export")
    reference = make_session(source).run(["logits"], feeds[0])[0]
    roles = matmul_roles(onnx.load(str(source)))
    for variant in VARIANTS:
        target = tmp_path / f"{variant}.onnx"
        info = quantize_variant(source, target, variant, feeds)
        got = make_session(target).run(["logits"], feeds[0])[0]
        assert np.abs(got - reference).max() < 0.05, variant
        graph = onnx.load(str(target)).graph
        weights = {init.name for init in graph.initializer}  # float weights; quantised ones are int8 (+ dequantise)
        float_matmuls = {n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights}
        score_nodes = {name for name, role in roles.items() if role == "qk_score"}
        if variant.endswith("fp32_scores"):  # the Q/K projections that rank tokens are still float MatMuls
            assert score_nodes <= float_matmuls and info["fp32"] == {"qk_score": 6}
        elif variant == "ffn_only":
            assert set(info["quantised"]) == {"ffn_in", "ffn_out"}
        else:
            assert not score_nodes & float_matmuls and not info["fp32"]
    with pytest.raises(toprune.ToPruneError, match="calibration"):
        quantize_variant(source, tmp_path / "x.onnx", "static")


def test_int8_variant_is_chosen_on_heldout_and_dev_is_reported(tiny, tmp_path, capsys):
    import shutil

    from toprune.cli import main
    from toprune.pretrained import load_tokenizer
    from toprune.quantize import choose_variant, int8_data

    folder = tmp_path / "export"
    shutil.copytree(tiny / "top-export", folder)
    data, why = int8_data(load_tokenizer(tiny / "top"), "mrpc", None, tiny / "glue")
    assert data is not None and data.selection is not None, why
    report = choose_variant(folder, data, load_tokenizer(tiny / "top"))
    assert set(report["heldout_metric"]) == {"fp32", *VARIANTS} and report["variant"] in VARIANTS
    incumbent = report["heldout_metric"]["per_channel"]
    assert report["variant"] == "per_channel" or report["win_rate_vs_incumbent"][report["variant"]] >= 0.95
    assert all(
        rate >= 0 and report["heldout_metric"][v] > incumbent for v, rate in report["win_rate_vs_incumbent"].items()
    )
    assert "held-out" in report["selected_on"] and 0 <= report["dev_metric_int8"] <= 100
    assert (folder / "model.int8.onnx").is_file()
    # the command: one variant measured, fp32 and INT8 dev metrics printed and saved in the export folder
    out = tmp_path / "cli"
    assert (
        main(
            [
                "export",
                str(tiny / "top"),
                "--output",
                str(out),
                "--int8",
                "--int8-variant",
                "dynamic_fp32_scores",
                "--task",
                "mrpc",
                "--data-dir",
                str(tiny / "glue"),
            ]
        )
        == 0
    )
    saved = json.loads((out / "toprune_onnx.json").read_text())["int8"]
    printed = capsys.readouterr().out
    assert saved["variant"] == "dynamic_fp32_scores" and saved["fp32"] == {"qk_score": 6}
    assert f"INT8 {saved['dev_metric_int8']:.2f}" in printed and f"fp32 {saved['dev_metric_fp32']:.2f}" in printed
    assert main(["export", str(tiny / "top"), "--output", str(tmp_path / "x"), "--int8", "--task", "nosuch"]) == 2


def test_frontier_writes_rows_table_and_plot(tiny, tmp_path, capsys):
    from toprune.cli import main

    out = tmp_path / "frontier_mrpc.json"
    args = [
        "frontier",
        "--task",
        "mrpc",
        "--dense",
        str(tiny / "dense"),
        "--pruned",
        str(tiny / "top"),
        "--data-dir",
        str(tiny / "glue"),
        "--examples",
        "6",
        "--repeats",
        "1",
        "--batch-sizes",
        "1,4",
        "--threads",
        "1",
        "--openvino",
        "f32",
        "--int8-variant",
        "dynamic",
        "--workdir",
        str(tmp_path / "work"),
        "--output",
        str(out),
    ]
    assert main(args) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    keys = {
        "model",
        "target",
        "backend",
        "int8",
        "precision",
        "metric",
        "ms_b1",
        "ms_b4",
        "paper_speedup_vs_dense_padded_b1",
        "within_teacher",
    }
    assert all(keys <= row.keys() for row in rows)
    combos = {(r["model"], r["backend"], r["int8"]) for r in rows}
    for model in ("dense", "top"):
        assert {
            (model, "pytorch", False),
            (model, "onnxruntime", False),
            (model, "onnxruntime", True),
            (model, "openvino", False),
        } <= combos
    assert {r["target"] for r in rows if r["model"] == "top"} == {"2x"}
    assert all(r["ms_b1"] > 0 and r["ms_b4"] > 0 for r in rows)
    assert all(
        r["parity_vs_onnxruntime_f32"]["max_abs_diff"] <= 1e-3
        for r in rows
        if r["backend"] == "openvino" and r["precision"] == "f32"
    )
    assert result["environment"]["threads"] == 1 and result["environment"]["cpu"]
    assert out.with_suffix(".png").stat().st_size > 0 and "paper conv." in out.with_suffix(".md").read_text()
    capsys.readouterr()
    bad = args[:6] + [str(tiny / "dense")] + args[7:]  # the dense teacher given as a pruned model
    assert main(bad[:-1] + [str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a pruned model" in err[0]


def test_frontier_verdict_charges_precision_beyond_dense_and_finds_the_fastest_model_within_the_margin():
    from toprune.frontier_verdict import verdict, verdict_markdown

    def row(model, backend, precision, metric, ms1, ms32, within):
        folder = f"runs/{model}"
        target = None if model == "dense" else "2x"
        return dict(model=model, target=target, folder=folder, backend=backend, precision=precision, metric=metric,
                    ms_b1=ms1, ms_b32=ms32, within_teacher=within)  # fmt: skip

    rows = [
        row("dense", "onnxruntime", "f32", 85.0, 2.0, 80.0, True),
        row("dense", "onnxruntime", "int8", 84.0, 1.5, 40.0, True),
        row("top", "onnxruntime", "f32", 84.5, 1.8, 40.0, True),
        row("top", "onnxruntime", "int8", 82.5, 1.4, 20.0, False),
        row("static", "onnxruntime", "f32", 84.2, 1.7, 38.0, True),
    ]
    summary = verdict(rows, [1, 32])
    (cost,) = [c for c in summary["precision_costs"] if c["row"].startswith("top")]
    assert cost["change"] == -2.0 and cost["dense_change"] == -1.0 and cost["beyond_dense"] == -1.0
    best = summary["fastest_within_teacher"]
    # the INT8 ToP graph is fastest but outside the margin: the fastest inside it is static f32 at b1 and b32
    assert best["b1"]["row"] == "static 2x onnxruntime f32" and best["b32"]["ms"] == 38.0
    assert best["b32"]["speedup_vs_dense"]["dense onnxruntime int8"] == 40.0 / 38.0
    assert "-1.00 beyond" in verdict_markdown(summary, 1.0)
    rows = [r for r in rows if r["model"] == "dense" or not r["within_teacher"]]
    assert verdict(rows, [1])["fastest_within_teacher"] == {"b1": None}


def test_an_int8_variant_replaces_per_channel_only_when_it_wins_on_most_resamples_of_the_slice():
    from types import SimpleNamespace

    import numpy as np

    from toprune.quantize import pick_variant

    data = SimpleNamespace(metric="accuracy", labels=("no", "yes"))
    golds = np.arange(400) % 2
    right, wrong = np.eye(2)[golds], np.eye(2)[1 - golds]

    def logits(errors):  # one-hot logits wrong on the given examples
        out = right.copy()
        out[errors] = wrong[errors]
        return out, golds

    incumbent = logits(np.arange(0, 400, 5))  # 80 errors
    lucky = logits(np.arange(5, 400, 5))  # 79 errors: one example better, a tie on most resamples
    better = logits(np.arange(0, 400, 10))  # 40 errors: better on every resample
    variants = ["dynamic", "per_channel", "static"]
    kept, rates = pick_variant(data, {"dynamic": lucky, "per_channel": incumbent, "static": incumbent}, variants)
    assert kept == "per_channel" and rates["dynamic"] < 0.95 and "static" not in rates  # not better: not bootstrapped
    kept, rates = pick_variant(data, {"dynamic": lucky, "per_channel": incumbent, "static": better}, variants)
    assert kept == "static" and rates["static"] == 1.0
    kept, rates = pick_variant(data, {"dynamic": lucky, "static": better}, ["dynamic", "static"])
    assert kept == "static" and rates == {}  # no incumbent among the variants: the best score
