"""Where batch-1 time goes in exported graphs, dense vs pruned: per op type, per op group and per layer.

    python benchmarks/b1_overhead.py --model dense=runs/frontier/mrpc/01-dense --model top=runs/frontier/mrpc/02-top \
        --task-dir ../shared/data/glue/MRPC --examples 200 --repeats 5 --threads 1
        -> results/b1_overhead.json

Every model folder is an export folder (``toprune export``); each runs the first N MRPC dev pairs one at a time
(batch 1, no padding) in ONNX Runtime (fp32 graph, and ``model.int8.onnx`` when present) and OpenVINO (f32, bf16,
and ``model.ov_int8.xml`` when present). Per backend it records:

* ``ms_b1``: plain timing (no profiler), median over passes of the mean ms per example;
* ``profile``: the runtime's own per-node timings (ONNX Runtime ``enable_profiling``, OpenVINO ``PERF_COUNT``), summed
  per op type, per group (``GROUPS``: matrix products, the transformer's other ops, the pruning machinery) and per
  layer, as ms per example and as shares of the profiled total. Profilers add a fixed cost per node, so absolute
  ms are above ``ms_b1``; shares are what to compare.
* ``nodes``: node count of the ONNX file and of the graph the runtime executes (after its fusions).

Layers: a node belongs to the layer whose LayerNormalization count it sits behind (embeddings LN = 1, then two per
layer): "prologue" before the embeddings' LN (masks, shapes), ``L<i>`` for encoder layer i (its pruning decision
included: it is made after layer i's attention), "head" after the last LN (restore scatter, pooler, classifier).

OpenVINO checks (``checks``): the dynamic-shape model against the same graph reshaped to a fixed [1, L] (one
compile per length, for the most frequent length), without ``PERFORMANCE_HINT=LATENCY``, and without the CPU
plugin's per-shape kernel cache (``CPU_RUNTIME_CACHE_CAPACITY=0``); ``reference_kernels_ms``: the nodes that run
OpenVINO's reference (``ref``) kernels instead of JIT ones.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from toprune.fast_tokenizer import FastTokenizer  # noqa: E402
from toprune.serve import CONFIG_FILENAME, INT8_FILENAME, ONNX_FILENAME  # noqa: E402

MATMUL = {
    # ONNX Runtime
    "MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeLinear", "Attention", "QAttention", "FusedMatMul",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MultiHeadAttention",
    # OpenVINO CPU runtime node types
    "FullyConnected", "FullyConnectedQuantizedLegacy", "FakeQuantize", "ScaledDotProductAttention", "Convolution",
}  # fmt: skip
TRANSFORMER = {
    "Softmax", "LayerNormalization", "SkipLayerNormalization", "BiasGelu", "Gelu", "FastGelu", "Tanh", "Erf", "Add",
    "Sub", "Mul", "Div", "Transpose", "Reshape", "Identity",
    "MVN", "Eltwise", "Subgraph", "Reorder", "Math", "Input", "Output", "Parameter", "Result", "Constant", "MulAdd",
    "Multiply", "Power",
}  # fmt: skip
# everything else is the pruning machinery: ranking (TopK), bins and survivor selection (Scatter/Gather/Where,
# reductions, comparisons), the index arithmetic and shape chains around them, the row gathers and the restore
GROUPS = ("matmul", "transformer", "pruning")
LN_TYPES = {"LayerNormalization", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization"}
DEQUANT = {"Cast", "Mul"}  # after MatMulInteger / DynamicQuantizeLinear: part of the INT8 matrix product


def group_of(op: str) -> str:
    if op in MATMUL:
        return "matmul"
    return "transformer" if op in TRANSFORMER else "pruning"


def dev_pairs(task_dir: Path, n: int) -> list[tuple[str, str]]:
    """The first n pairs of MRPC dev.tsv (columns Quality, #1 ID, #2 ID, #1 String, #2 String; no quoting)."""
    lines = (task_dir / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.split("\t") for line in lines if line.strip()]
    return [(r[3], r[4]) for r in rows[:n]]


def feeds(folder: Path, pairs, max_length: int) -> list[dict]:
    inputs = json.loads((folder / CONFIG_FILENAME).read_text())["inputs"]
    tok = FastTokenizer(folder, inputs)
    return [tok([a], [b], padding=True, truncation=True, max_length=max_length, return_tensors="np") for a, b in pairs]


# ---------------------------------------------------------------- graph structure: layers of ONNX nodes


def onnx_layers(path: Path) -> tuple[dict[str, str], dict[str, str], int]:
    """Node name -> layer label and node name -> op group (INT8 dequantisation counted with its matmul)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    depth: dict[str, int] = {}  # node name -> LayerNormalizations on its longest input path (itself included)
    dequant: set[str] = set()
    for node in graph.node:  # ONNX files are topologically sorted
        parents = [producer[i] for i in node.input if i in producer]
        depth[node.name] = max((depth[p.name] for p in parents), default=0) + (node.op_type in LN_TYPES)
        if node.op_type in DEQUANT and any(
            p.op_type in ("MatMulInteger", "DynamicQuantizeLinear") or p.name in dequant for p in parents
        ):
            dequant.add(node.name)
    last = max(depth.values(), default=0)
    labels = {}
    for name, d in depth.items():
        labels[name] = "prologue" if d == 0 else "head" if d == last else f"L{(d - 1) // 2}"
    groups = {n.name: "matmul" if n.name in dequant else group_of(n.op_type) for n in graph.node}
    return labels, groups, len(graph.node)


def summarise(events: list[tuple[str, str, float]], labels, groups, examples: int) -> dict:
    """events: (node name, op type, microseconds) -> ms per example by op type, group and layer, and shares."""
    by_op, by_group, by_layer = collections.Counter(), collections.Counter(), collections.Counter()
    by_layer_group = collections.Counter()
    for name, op, us in events:
        group = groups.get(name, group_of(op))
        layer = labels.get(name, "?")
        by_op[op] += us
        by_group[group] += us
        by_layer[layer] += us
        by_layer_group[f"{layer}/{group}"] += us
    total = sum(by_op.values())

    def ms(counter, top=None):
        items = counter.most_common(top)
        return {k: round(v / examples / 1000.0, 4) for k, v in items}

    return {
        "ms_per_example": round(total / examples / 1000.0, 4),
        "share": {g: round(by_group[g] / total, 4) for g in GROUPS} if total else {},
        "ms_by_group": ms(by_group),
        "ms_by_layer": dict(sorted(ms(by_layer).items())),
        "ms_by_layer_group": dict(sorted(ms(by_layer_group).items())),
        "top_ops": ms(by_op, 15),
        "nodes_executed": len({name for name, _, _ in events}),
    }


# ---------------------------------------------------------------- ONNX Runtime


ORT_CONFIG: dict[str, str] = {}  # --ort-config: session config entries to try (e.g. session.intra_op.allow_spinning)


def ort_session(path: Path, threads: int, profile: bool = False, optimized: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()  # as toprune.serve.make_session
    for key, value in ORT_CONFIG.items():
        options.add_session_config_entry(key, value)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"b1_ort_{os.getpid()}")
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timed(run, data: list[dict], repeats: int) -> dict:
    for feed in data:  # warm-up
        run(feed)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for feed in data:
            run(feed)
        samples.append((time.perf_counter() - start) * 1000.0 / len(data))
    return {"ms_b1": round(statistics.median(samples), 4), "ms_b1_min": round(min(samples), 4), "passes": repeats}


def ort_backend(path: Path, data: list[dict], threads: int, repeats: int) -> dict:
    session = ort_session(path, threads)
    wanted = {i.name for i in session.get_inputs()}
    data = [{k: v for k, v in feed.items() if k in wanted} for feed in data]
    out = timed(lambda feed: session.run(None, feed), data, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        ort_session(path, threads, optimized=optimized)  # the graph ONNX Runtime executes, after its fusions
        labels, groups, executed_nodes = onnx_layers(optimized)
    session = ort_session(path, threads, profile=True)
    for feed in data:  # warm-up, dropped from the profile below
        session.run(None, feed)
    events = []
    for _ in range(repeats):
        for feed in data:
            session.run(None, feed)
    profile_file = Path(session.end_profiling())
    trace = json.loads(profile_file.read_text())
    profile_file.unlink()
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    start_us = runs[len(data)]["ts"] if len(runs) > len(data) else 0  # first timed run
    timed_runs = [e["dur"] for e in runs if e["ts"] >= start_us]
    for e in trace:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start_us:
            events.append((e["name"][: -len("_kernel_time")], e["args"]["op_name"], float(e["dur"])))
    out["profile"] = summarise(events, labels, groups, repeats * len(data))
    # what the run took beyond its kernels: the executor's per-node bookkeeping, allocations, shape computation
    run_ms = sum(timed_runs) / max(len(timed_runs), 1) / 1000.0
    out["profile"]["run_ms_per_example"] = round(run_ms, 4)
    out["profile"]["outside_kernels_ms"] = round(run_ms - out["profile"]["ms_per_example"], 4)
    out["nodes_optimized_graph"] = executed_nodes
    return out


# ---------------------------------------------------------------- OpenVINO

OV_HINTS = {"f32": "f32", "bf16": "bf16", "int8": "f32"}


def ov_compile(model, precision: str, threads: int, latency: bool = True, perf: bool = False, **extra):
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": OV_HINTS[precision], "INFERENCE_NUM_THREADS": threads, **extra}
    if latency:
        config["PERFORMANCE_HINT"] = "LATENCY"
    if perf:
        config["PERF_COUNT"] = True
    return ov.Core().compile_model(model, "CPU", config)


def ov_runner(compiled):
    request = compiled.create_infer_request()
    names = {port.any_name for port in compiled.inputs}

    def run(feed):
        return request.infer({k: v for k, v in feed.items() if k in names})

    run.request = request
    return run


def ov_layers(path: Path, compiled) -> tuple[dict[str, str], dict[str, str]]:
    """Runtime node name -> layer label (from the ONNX nodes it was made of) and -> its group."""
    onnx_path = path if path.suffix == ".onnx" else None
    labels_onnx, _, _ = onnx_layers(onnx_path) if onnx_path else ({}, {}, 0)
    order = {"prologue": -1, "head": 99}
    labels, groups = {}, {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        name = op.get_friendly_name()
        kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        groups[name] = group_of(kind)
        originals = info["originalLayersNames"].astype(str).split(",") if "originalLayersNames" in info else [name]
        found = [labels_onnx[o] for o in originals if o in labels_onnx]
        if found:
            labels[name] = max(found, key=lambda s: order.get(s, int(s[1:]) if s[1:].isdigit() else 0))
    return labels, groups


def ov_backend(path: Path, precision: str, data: list[dict], threads: int, repeats: int) -> dict:
    import openvino as ov

    model = ov.Core().read_model(str(path))
    out = timed(ov_runner(ov_compile(model, precision, threads)), data, repeats)
    compiled = ov_compile(model, precision, threads, perf=True)
    run = ov_runner(compiled)
    labels, groups = ov_layers(path, compiled)
    for feed in data:
        run(feed)
    events, ref = [], collections.Counter()
    wall = 0.0
    for _ in range(repeats):
        for feed in data:
            start = time.perf_counter()
            run(feed)
            wall += time.perf_counter() - start
            for info in run.request.profiling_info:
                if str(info.status).endswith("EXECUTED") and not str(info.status).endswith("NOT_EXECUTED"):
                    us = info.real_time.total_seconds() * 1e6
                    events.append((info.node_name, info.node_type, us))
                    if "ref" in info.exec_type:
                        ref[f"{info.node_type}:{info.exec_type}"] += us
    examples = repeats * len(data)
    out["profile"] = summarise(events, labels, groups, examples)
    # the infer call beyond its nodes' own time: with shapes known only while running (data-dependent survivor
    # counts), the CPU plugin infers shapes, prepares kernels and reallocates node by node inside the call
    out["profile"]["run_ms_per_example"] = round(wall * 1000.0 / examples, 4)
    out["profile"]["outside_kernels_ms"] = round(wall * 1000.0 / examples - out["profile"]["ms_per_example"], 4)
    out["reference_kernels_ms"] = {k: round(v / examples / 1000.0, 4) for k, v in ref.most_common()}
    out["nodes_runtime_graph"] = len(compiled.get_runtime_model().get_ordered_ops())
    return out


def ov_checks(path: Path, precision: str, data: list[dict], threads: int, repeats: int) -> dict:
    """Does the dynamic-shape model pay for its dynamism at batch 1? The same inputs (the most frequent length)
    through the dynamic model, one reshaped to that fixed length, and the dynamic one without the latency hint."""
    import openvino as ov

    lengths = collections.Counter(int(feed["input_ids"].shape[1]) for feed in data)
    length, count = lengths.most_common(1)[0]
    same = [feed for feed in data if feed["input_ids"].shape[1] == length]
    core = ov.Core()
    dynamic = core.read_model(str(path))
    fixed = core.read_model(str(path))
    fixed.reshape({port.any_name: ov.PartialShape([1, length]) for port in fixed.inputs})
    reps = max(repeats, 20 // max(count, 1))
    return {
        "length": length,
        "examples": count,
        "dynamic_latency_hint": timed(ov_runner(ov_compile(dynamic, precision, threads)), same, reps)["ms_b1"],
        "dynamic_no_hint": timed(ov_runner(ov_compile(dynamic, precision, threads, latency=False)), same, reps)[
            "ms_b1"
        ],
        "fixed_shape": timed(ov_runner(ov_compile(fixed, precision, threads)), same, reps)["ms_b1"],
        # the CPU plugin caches kernels per input shape: without the cache, every call with new shapes re-plans
        "dynamic_no_kernel_cache": timed(
            ov_runner(ov_compile(dynamic, precision, threads, CPU_RUNTIME_CACHE_CAPACITY=0)), same, reps
        )["ms_b1"],
    }


def summary(result: dict) -> dict:
    """Per backend and model: ms against the first model (timed beside it), the pruning ops' share of kernel
    time, the time outside kernels, and the executed node count."""
    out = {}
    labels = list(result["models"])
    for label in labels:
        for backend, b in result["models"][label]["backends"].items():
            first = result["models"][labels[0]]["backends"].get(backend)
            prof = b["profile"]
            out.setdefault(backend, {})[label] = {
                "ms_b1": b["ms_b1"],
                "vs_" + labels[0]: round(b["ms_b1"] / first["ms_b1"], 3) if first else None,
                "pruning_share_of_kernels": prof["share"].get("pruning"),
                "pruning_ms": prof["ms_by_group"].get("pruning", 0.0),
                "kernels_ms": prof["ms_per_example"],
                "outside_kernels_ms": prof["outside_kernels_ms"],
                "nodes_executed": prof["nodes_executed"],
            }
    return out


def export(spec: str, task: str, variant: str) -> None:
    """``--export MODEL=FOLDER``: the export folder of a saved model as `toprune frontier` writes it (fp32, ONNX
    Runtime INT8 ``variant``, NNCF INT8 calibrated on the task's first training examples)."""
    from toprune.export import export_folder
    from toprune.openvino_backend import CALIBRATION_EXAMPLES, quantize_openvino
    from toprune.pretrained import load_tokenizer
    from toprune.quantize import calibration_feeds, int8_data

    source, folder = spec.split("=", 1)
    export_folder(source, folder, int8=True, variant=variant)
    tokenizer = load_tokenizer(source)
    data, why = int8_data(tokenizer, task, {"max_length": 128}, str(HERE.parent.parent / "shared/data/glue"))
    if data is None:
        raise SystemExit(f"--task {task}: {why}")
    quantize_openvino(folder, calibration_feeds(data.train, tokenizer, CALIBRATION_EXAMPLES))
    print(f"exported {source} -> {folder}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], help="label=export folder (repeatable)")
    p.add_argument("--export", action="append", default=[], help="saved model=new export folder, made first")
    p.add_argument("--export-task", default="mrpc", help="GLUE task of --export's NNCF calibration")
    p.add_argument("--int8-variant", default="per_channel", help="ONNX Runtime INT8 variant of --export")
    p.add_argument("--task-dir", default=str(HERE.parent.parent / "shared/data/glue/MRPC"))
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--backends", default="ort_f32,ort_int8,ov_f32,ov_bf16,ov_int8")
    p.add_argument("--no-ov-checks", action="store_true", help="skip the fixed-shape / hint comparison")
    p.add_argument("--ort-config", action="append", default=[], help="KEY=VALUE ONNX Runtime session config entry")
    p.add_argument("--output", default=str(HERE / "results" / "b1_overhead.json"))
    args = p.parse_args(argv)
    ORT_CONFIG.update(entry.split("=", 1) for entry in args.ort_config)
    for spec in args.export:
        export(spec, args.export_task, args.int8_variant)
    if not args.model:
        return {}
    pairs = dev_pairs(Path(args.task_dir), args.examples)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    result = {"examples": len(pairs), "threads": args.threads, "repeats": args.repeats, "ort_config": ORT_CONFIG}
    result["models"] = {}
    models = dict(spec.split("=", 1) for spec in args.model)
    data = {label: feeds(Path(folder), pairs, args.max_length) for label, folder in models.items()}
    import onnx

    for label, folder in models.items():
        graph = onnx.load(str(Path(folder) / ONNX_FILENAME), load_external_data=False).graph
        result["models"][label] = {"folder": folder, "nodes_onnx": len(graph.node), "backends": {}}
    for backend in backends:  # the models side by side per backend: the same load on a busy machine
        kind, precision = backend.split("_", 1)
        for label, folder in models.items():
            entry = result["models"][label]["backends"]
            if kind == "ort":
                path = Path(folder) / (INT8_FILENAME if precision == "int8" else ONNX_FILENAME)
                if path.is_file():
                    entry[backend] = ort_backend(path, data[label], args.threads, args.repeats)
            else:
                path = Path(folder) / ("model.ov_int8.xml" if precision == "int8" else ONNX_FILENAME)
                if path.is_file():
                    entry[backend] = ov_backend(path, precision, data[label], args.threads, args.repeats)
                    if not args.no_ov_checks and precision != "int8":
                        entry[backend]["checks"] = ov_checks(path, precision, data[label], args.threads, args.repeats)
            if backend in entry:
                b = entry[backend]
                print(f"{label} {backend}: {b['ms_b1']:.2f} ms b1, shares {b['profile']['share']}", flush=True)
    result["summary"] = summary(result)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
