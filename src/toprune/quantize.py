"""INT8 variants of an exported graph (ONNX Runtime's quantiser), built to find where a pruned graph loses accuracy.

A pruned graph differs from a dense one in one way that matters to quantisation: some layers' attention
probabilities *decide* which tokens survive. Perturb their query/key projections and near-ties in the token ranking
swap, so different tokens reach the later layers. The variants isolate that and the usual suspects:

* ``dynamic``: every weight MatMul/Gemm, per-tensor dynamic INT8 (what ``toprune export --int8`` did first);
* ``dynamic_fp32_scores``: the same, but the Q/K projections of the layers whose attention feeds a pruning decision
  stay fp32 (found in the graph: their Softmax has a consumer besides the attention-times-values MatMul);
* ``ffn_only``: only the feed-forward MatMuls (two thirds of the weights' FLOPs) are quantised;
* ``per_channel``: dynamic with one scale per output channel instead of per tensor;
* ``static``: static INT8 (QDQ), activation ranges calibrated on training texts, per-channel weights;
* ``static_fp32_scores``: static, with the score layers' Q/K projections fp32.

The activation-by-activation MatMuls (scores, attention-times-values) are never quantised: only weights' MatMuls.
Roles are found from the graph's structure (which op a MatMul's output reaches), never from layer names or indices.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

from .errors import ToPruneError

VARIANTS = ("dynamic", "dynamic_fp32_scores", "ffn_only", "per_channel", "static", "static_fp32_scores")
# the order ties are broken in when variants score the same on the held-out slice: the simplest, best-tested first
DEFAULT_VARIANT = "dynamic_fp32_scores"  # without data to choose on: the variant that leaves the selection alone
# With data, the variant to beat: another is kept only if it beats this one on the held-out slice in at least
# WIN_RATE of paired bootstrap resamples. The plain maximum over six variants on a few hundred examples picked a
# lucky variant: on 4 models where it chose another, per_channel was 1.1-2.0 points better on dev
# (benchmarks/README.md section 16); per_channel kept the slice's fp32 score best on most models measured.
INCUMBENT = "per_channel"
WIN_RATE = 0.95
# ops a projection's output passes through before it meets the op that tells its role (bias, head split, scaling)
_PASS = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Reshape",
    "Transpose",
    "Cast",
    "Unsqueeze",
    "Squeeze",
    "Identity",
    "Where",
    "Expand",
    "Slice",
    "Split",
    "Concat",
    "Gather",
}
_GELU = {"Gelu", "BiasGelu", "FastGelu", "Erf", "QuickGelu"}
_DEPTH = 10  # pass-through ops between a projection and the op that names its role (BERT-family graphs need ~5)


def _graph_maps(graph):
    consumers, producer = defaultdict(list), {}
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
        for name in node.output:
            producer[name] = node
    return consumers, producer


def _forward_stops(tensor: str, consumers) -> list:
    """The first non-pass-through ops reached from ``tensor``."""
    stops, frontier, seen = [], [tensor], set()
    for _ in range(_DEPTH):
        nxt = []
        for name in frontier:
            for node in consumers.get(name, ()):
                if id(node) in seen:
                    continue
                seen.add(id(node))
                (nxt.extend(node.output) if node.op_type in _PASS else stops.append(node))
        frontier = nxt
    return stops


def _backward_reaches(tensor: str, producer, ops: set[str]) -> bool:
    frontier = [tensor]
    for _ in range(_DEPTH):
        nxt = []
        for name in frontier:
            node = producer.get(name)
            if node is None:
                continue
            if node.op_type in ops:
                return True
            if node.op_type in _PASS:
                nxt.extend(node.input)
        frontier = nxt
    return False


def matmul_roles(model) -> dict[str, str]:
    """{weight MatMul/Gemm node name: role}: qk_score (Q/K projection of a layer whose attention decides which
    tokens survive), qk, v, attention (feeds a fused Attention node), attn_out, ffn_in, ffn_out, other."""
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    consumers, producer = _graph_maps(graph)
    roles = {}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or not any(name in weights for name in node.input[1:2]):
            continue
        stops = _forward_stops(node.output[0], consumers)
        kinds = {s.op_type for s in stops}
        role = "other"
        if kinds & _GELU:
            role = "ffn_in"
        elif _backward_reaches(node.input[0], producer, _GELU):
            role = "ffn_out"
        elif kinds & {"Attention", "MultiHeadAttention"}:
            role = "attention"
        elif "MatMul" in kinds:
            inner = next(s for s in stops if s.op_type == "MatMul")
            softmaxes = [s for s in _forward_stops(inner.output[0], consumers) if s.op_type == "Softmax"]
            if softmaxes:  # scores = Q K^T: a pruning decision reads the probabilities when Softmax has >1 reader
                role = "qk_score" if any(len(consumers[s.output[0]]) > 1 for s in softmaxes) else "qk"
            else:
                role = "v"
        elif _backward_reaches(node.input[0], producer, {"MatMul"}):
            role = "attn_out"
        roles[node.name] = role
    return roles


class FeedReader:
    """onnxruntime's CalibrationDataReader over a list of numpy feeds (tokenised training texts)."""

    def __init__(self, feeds: list[dict], inputs: list[str]) -> None:
        self._feeds = [{k: v for k, v in feed.items() if k in inputs} for feed in feeds]
        self._next = 0

    def get_next(self):
        if self._next >= len(self._feeds):
            return None
        self._next += 1
        return self._feeds[self._next - 1]

    def rewind(self) -> None:
        self._next = 0


def quantize_variant(
    source: str | Path,
    target: str | Path,
    variant: str,
    feeds: list[dict] | None = None,
    roles_only: set[str] | None = None,
) -> dict:
    """Write the INT8 ``variant`` of the graph at ``source`` to ``target``; returns what was quantised.
    ``feeds``: calibration inputs for the static variants (training texts, never dev). ``roles_only``: quantise only
    the projections of these roles (:func:`matmul_roles`), for diagnosis: which op's quantisation costs accuracy."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from .export import _quiet_logs

    if variant not in VARIANTS:
        raise ToPruneError(f"unknown INT8 variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    model = onnx.load(str(source), load_external_data=False)
    roles = matmul_roles(model)
    keep_fp32 = {"qk_score"} if variant.endswith("fp32_scores") else set()
    chosen = {"ffn_in", "ffn_out"} if variant == "ffn_only" else set(roles.values()) - keep_fp32
    if roles_only is not None:
        chosen &= set(roles_only)
    nodes = sorted(name for name, role in roles.items() if role in chosen)
    if not nodes:
        raise ToPruneError(f"{source}: no weight MatMul/Gemm to quantise for variant {variant}")
    with warnings.catch_warnings(), _quiet_logs():
        warnings.simplefilter("ignore")
        if variant.startswith("static"):
            if not feeds:
                raise ToPruneError(f"INT8 variant {variant} needs calibration texts (a task with training data)")
            inputs = [i.name for i in model.graph.input]
            quantize_static(
                str(source),
                str(target),
                FeedReader(feeds, inputs),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Gemm"],
                nodes_to_quantize=nodes,
                calibrate_method=CalibrationMethod.MinMax,
            )
        else:
            quantize_dynamic(
                str(source),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=variant == "per_channel",
                op_types_to_quantize=["MatMul", "Gemm"],
                nodes_to_quantize=nodes,
            )
    quantised, fp32 = defaultdict(int), defaultdict(int)
    for name, role in roles.items():
        (quantised if name in nodes else fp32)[role] += 1
    return {"variant": variant, "quantised": dict(quantised), "fp32": dict(fp32)}


def with_selection_outputs(source: str | Path, target: str | Path) -> list[str]:
    """A copy of the graph that also outputs every TopK's indices (which tokens each pruning step keeps), for
    comparing the selection of two graphs (fp32 vs INT8) on the same inputs; returns those output names."""
    import onnx

    model = onnx.load(str(source))
    names = [node.output[1] for node in model.graph.node if node.op_type == "TopK" and len(node.output) > 1]
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    onnx.save(model, str(target))
    return names


# ---- measuring graphs on task data (the torch side: tokenised datasets and loaders) -------------------------------


def calibration_feeds(dataset, tokenizer, examples: int, batch_size: int = 16) -> list[dict]:
    """Numpy feeds of the first ``examples`` of a tokenised dataset (labels dropped), dynamic padding."""
    from .train import make_loader

    subset = dataset.select(range(min(examples, len(dataset))))
    return [
        {k: v.numpy() for k, v in batch.items() if k != "labels"}
        for batch in make_loader(subset, tokenizer, batch_size, False)
    ]


def graph_outputs(run, dataset, tokenizer, batch_size: int = 64) -> tuple:
    """(logits, labels) of a runner (feed dict of numpy arrays -> logits) over a tokenised dataset."""
    import numpy as np

    from .train import make_loader

    logits, golds = [], []
    for batch in make_loader(dataset, tokenizer, batch_size, False):
        golds.append(batch.pop("labels").numpy())
        logits.append(np.asarray(run({k: v.numpy() for k, v in batch.items()})))
    return np.concatenate(logits), np.concatenate(golds)


def metric_of(data, logits, golds) -> float:
    from .metrics import glue_metrics

    preds = logits[:, 0] if data.labels is None else logits.argmax(-1)
    return glue_metrics(data.metric, preds, golds)[data.metric]


def session_runner(session, inputs: list[str]):
    def run(feed: dict):
        return session.run(["logits"], {k: v for k, v in feed.items() if k in inputs})[0]

    return run


def choose_variant(folder: Path, data, tokenizer, variants=VARIANTS, calibration: int = 300) -> dict:
    """Quantise the folder's graph every way in ``variants``, score each on the held-out training slice (never dev),
    keep the best as ``model.int8.onnx``; then read the dev metric of the fp32 graph and of the kept one."""
    import json

    from .serve import CONFIG_FILENAME, INT8_FILENAME, ONNX_FILENAME, make_session

    if data.selection is None:
        raise ToPruneError("choosing the INT8 variant needs a held-out training slice; this task has none")
    inputs = json.loads((folder / CONFIG_FILENAME).read_text())["inputs"]
    feeds = calibration_feeds(data.train, tokenizer, calibration)
    fp32 = session_runner(make_session(folder / ONNX_FILENAME, threads=1), inputs)
    heldout = {"fp32": metric_of(data, *graph_outputs(fp32, data.selection, tokenizer))}
    details, outputs = {}, {}
    for variant in variants:
        path = folder / f"model.int8-{variant}.onnx.tmp"
        try:
            details[variant] = quantize_variant(folder / ONNX_FILENAME, path, variant, feeds)
            run = session_runner(make_session(path, threads=1), inputs)
            outputs[variant] = graph_outputs(run, data.selection, tokenizer)
            heldout[variant] = metric_of(data, *outputs[variant])
        finally:
            path.unlink(missing_ok=True)
    best, win_rates = pick_variant(data, outputs, list(variants), scores=heldout)
    quantize_variant(folder / ONNX_FILENAME, folder / INT8_FILENAME, best, feeds)
    int8 = session_runner(make_session(folder / INT8_FILENAME, threads=1), inputs)
    return {
        **details[best],
        "metric": data.metric,
        "selected_on": "given, not chosen (one variant)"
        if len(variants) == 1
        else data.selection_info.describe()
        if data.selection_info
        else "held-out training slice",
        "heldout_metric": heldout,
        "win_rate_vs_incumbent": win_rates,
        "calibration_examples": min(calibration, len(data.train)),
        "dev_metric_fp32": metric_of(data, *graph_outputs(fp32, data.dev, tokenizer)),
        "dev_metric_int8": metric_of(data, *graph_outputs(int8, data.dev, tokenizer)),
    }


def pick_variant(
    data, outputs: dict, variants: list[str], scores: dict | None = None, resamples: int = 1000, seed: int = 0
) -> tuple:
    """(the kept variant, {challenger: share of paired bootstrap resamples of the slice it wins}) from each variant's
    (logits, labels) on the held-out slice (``scores``: their slice metrics, if already read). Without the incumbent
    among them: the best score (ties: the earlier)."""
    import numpy as np

    scores = scores or {v: metric_of(data, *outputs[v]) for v in variants}

    def best_of(candidates: list[str]) -> str:  # the best score; ties: the earlier variant
        return max(candidates, key=lambda v: (round(scores[v], 6), -variants.index(v)))

    if INCUMBENT not in variants:
        return best_of(variants), {}
    golds = outputs[INCUMBENT][1]
    draws = np.random.default_rng(seed).integers(0, len(golds), size=(resamples, len(golds)))

    def resampled(variant: str) -> np.ndarray:  # the metric on each resample (the same examples for every variant)
        logits = outputs[variant][0]
        return np.array([metric_of(data, logits[i], golds[i]) for i in draws])

    challengers = [v for v in variants if v != INCUMBENT and scores[v] > scores[INCUMBENT]]
    incumbent = resampled(INCUMBENT) if challengers else None  # read once, not once per challenger
    # a paired comparison: each challenger against the incumbent on the same resample
    rates = {v: float(np.mean(resampled(v) > incumbent)) for v in challengers}
    winners = [v for v in variants if rates.get(v, 0.0) >= WIN_RATE]
    return (best_of(winners) if winners else INCUMBENT), rates


def int8_data(tokenizer, task: str | None, spec: dict | None, data_dir, calibration: int = 300):
    """(task data to choose the INT8 variant on, or None; why not) for ``toprune export --int8``: the model's task
    (GLUE, or the user's recorded files), with its held-out training slice and ``calibration`` training examples."""
    from .squad import is_squad
    from .train import prepare_data

    spec = spec or {}
    task = task or spec.get("task")
    files = {k: spec.get(k) for k in ("train_file", "validation_file")}
    if not task and not files["train_file"]:
        return None, "the model carries no task (toprune_task.json): pass --task to choose on its training data"
    if is_squad(task) or task == "embedding":
        return None, f"choosing by measurement is for classification and regression, not {task}"
    columns = ",".join(spec["text_columns"]) if spec.get("text_columns") else None
    try:
        data = prepare_data(
            tokenizer,
            task if not files["train_file"] else None,
            data_dir,
            int(spec.get("max_length") or 128),
            max_train_samples=calibration,
            text_columns=columns,
            label_column=spec.get("label_column"),
            **files,
        )
    except ToPruneError as exc:
        return None, f"the training data is not available ({exc})"
    return data, ""
