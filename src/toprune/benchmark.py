"""Latency measurement: dense HF (SDPA, dynamic padding) vs dense ONNX Runtime vs the pruned runtime.

Protocol (the same for every row): real tokenised dev inputs in dataset order, grouped into batches of B and
padded to the longest in each batch (dynamic padding); ``threads`` intra-op threads for both PyTorch and ONNX
Runtime; one untimed warm-up pass over all batches, then ``repeats`` timed passes; a pass's time divided by its
number of batches is one sample, and the median sample is reported (ms per batch).
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .errors import ToPruneError


@dataclass
class Timing:
    name: str
    batch_size: int
    ms_median: float
    ms_min: float
    ms_max: float
    batches: int
    repeats: int

    def as_dict(self) -> dict:
        return asdict(self)


def make_batches(tokenizer, texts_a, texts_b=None, batch_size=32, max_length=512) -> list[dict]:
    """Tokenise each example alone, then pad per batch to its own longest example (dynamic padding)."""
    pairs = (list(texts_a),) if texts_b is None else (list(texts_a), list(texts_b))
    encoded = tokenizer(*pairs, truncation=True, max_length=max_length)
    rows = [{k: encoded[k][i] for k in encoded.keys()} for i in range(len(texts_a))]
    return [tokenizer.pad(rows[i : i + batch_size], return_tensors="pt") for i in range(0, len(rows), batch_size)]


def time_batches(run: Callable[[dict], object], batches: list[dict], name: str, repeats: int = 5) -> Timing:
    for batch in batches:  # warm-up: allocator, thread pool, ORT graph caches
        run(batch)
    samples = []
    for _ in tqdm(range(repeats), desc=f"{name} b{batches[0]['input_ids'].shape[0]}", leave=False):
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        samples.append((time.perf_counter() - start) * 1000.0 / len(batches))
    return Timing(name, int(batches[0]["input_ids"].shape[0]), statistics.median(samples), min(samples),
                  max(samples), len(batches), repeats)


def torch_runner(model) -> Callable[[dict], object]:
    def run(batch: dict):
        with torch.inference_mode():
            return model(**batch).logits

    return run


def export_dense_onnx(model, sample: dict, path: str | Path) -> Path:
    """Export an *unpruned* HF model to ONNX with dynamic batch and sequence axes (the dense serving baseline).

    Uses the torch.export-based exporter: the legacy TorchScript tracer bakes the HF mask logic for the traced
    shape, and its graph gives wrong logits on other padded batches (checked: 1e-2 off).
    """
    import warnings

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(sample.keys())
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (), kwargs=dict(sample), input_names=names, output_names=["logits"],
            dynamic_shapes={k: {0: batch, 1: seq} for k in names}, dynamo=True, opset_version=18, verbose=False,
        )
    program.save(str(path))
    return path


def ort_runner(path: str | Path, threads: int, check_against=None, check_batch: dict | None = None):
    """An ONNX Runtime CPU session as a runner; optionally checks parity with a PyTorch model first."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}

    def run(batch: dict):
        return session.run(None, {k: v.numpy() for k, v in batch.items() if k in wanted})[0]

    if check_against is not None:
        expected = torch_runner(check_against)(check_batch).numpy()
        diff = float(np.abs(run(check_batch) - expected).max())
        if diff > 1e-3:
            raise ToPruneError(f"ONNX export disagrees with PyTorch on a padded batch (max abs diff {diff:.2e})")
    return run


def environment(threads: int) -> dict:
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnxruntime
    import transformers

    return {"cpu": cpu, "threads": threads, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def compare_latency(dense, pruned, tokenizer, texts_a, texts_b=None, batch_sizes=(1, 32), threads=2, repeats=5,
                    onnx_dir: str | Path | None = None, max_length: int = 512) -> dict:
    """Dense HF (SDPA) vs pruned model, plus the dense ONNX Runtime row, on the same inputs and protocol.

    Returns {"dense": {b: ms}, "pruned": {b: ms}, "dense_onnxruntime": {b: ms}, "timings": [...]}.
    """
    import tempfile

    torch.set_num_threads(threads)
    out = {"dense": {}, "pruned": {}, "dense_onnxruntime": {}, "timings": []}
    with tempfile.TemporaryDirectory() as tmp:
        sample = make_batches(tokenizer, texts_a[:4], texts_b[:4] if texts_b else None, 4)[0]
        onnx_path = export_dense_onnx(dense, sample, Path(onnx_dir or tmp) / "dense.onnx")
        ort = ort_runner(onnx_path, threads, check_against=dense, check_batch=sample)
        for bs in batch_sizes:
            batches = make_batches(tokenizer, texts_a, texts_b, bs, max_length)  # the length that was evaluated
            for key, name, run in [("dense_onnxruntime", "dense ONNX Runtime", ort),
                                   ("dense", "dense HF eager (SDPA)", torch_runner(dense)),
                                   ("pruned", "pruned (toprune)", torch_runner(pruned))]:
                timing = time_batches(run, batches, name, repeats)
                out[key][bs] = timing.ms_median
                out["timings"].append(timing.as_dict())
    return out
