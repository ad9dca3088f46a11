"""Latency measurement: dense HF (SDPA, dynamic padding) vs dense ONNX Runtime vs the pruned runtime.

Protocol (the same for every row): real tokenised dev inputs in dataset order, grouped into batches of B and
padded to the longest in each batch (dynamic padding); ``threads`` intra-op threads for both PyTorch and ONNX
Runtime; one untimed warm-up pass over all batches, then ``repeats`` timed passes; a pass's time divided by its
number of batches is one sample, and the median sample is reported (ms per batch). Rows compared in one table have
their passes interleaved (:func:`time_interleaved`): a shared machine's slow spells then fall on every row alike.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from .errors import ToPruneError
from .serve import CONFIG_FILENAME


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


def time_interleaved(runners: dict[str, tuple[str, Callable]], batches: list[dict], repeats: int = 5) -> dict:
    """{key: :class:`Timing`} of every runner ({key: (label, run)}) on the same batches, their passes interleaved:
    pass 1 of each, then pass 2 of each, in an order rotated every pass. On a shared machine a slow spell then
    slows every row alike instead of whichever row was being timed, so the ratios between rows hold."""
    for _, run in runners.values():  # warm-up: allocator, thread pool, ORT graph caches
        for batch in batches:
            run(batch)
    keys, size = list(runners), int(batches[0]["input_ids"].shape[0])
    samples = {key: [] for key in keys}
    names = ", ".join(label for label, _ in runners.values())
    for i in tqdm(range(repeats), desc=f"{names} b{size}"[:60], leave=False):
        for key in keys[i % len(keys) :] + keys[: i % len(keys)]:
            run = runners[key][1]
            start = time.perf_counter()
            for batch in batches:
                run(batch)
            samples[key].append((time.perf_counter() - start) * 1000.0 / len(batches))
    return {
        key: Timing(
            runners[key][0],
            size,
            statistics.median(samples[key]),
            min(samples[key]),
            max(samples[key]),
            len(batches),
            repeats,
        )
        for key in keys
    }


def time_batches(run: Callable[[dict], object], batches: list[dict], name: str, repeats: int = 5) -> Timing:
    return time_interleaved({name: (name, run)}, batches, repeats)[name]


def torch_runner(model) -> Callable[[dict], object]:
    from .train import head_logits

    def run(batch: dict):
        with torch.inference_mode():
            return head_logits(model(**batch))  # classification logits, or QA start/end logits

    return run


def ort_runner(folder: str | Path, threads: int, int8: bool = False) -> Callable[[dict], object]:
    """An ONNX Runtime CPU session on an export folder (``export.export_onnx``, parity already checked there)."""
    from .export import CONFIG_FILENAME, INT8_FILENAME, ONNX_FILENAME, make_session

    folder = Path(folder)
    session = make_session(folder / (INT8_FILENAME if int8 else ONNX_FILENAME), threads)
    wanted = set(json.loads((folder / CONFIG_FILENAME).read_text())["inputs"])

    def run(batch: dict):
        return session.run(None, {k: v.numpy() for k, v in batch.items() if k in wanted})[0]

    return run


def openvino_runner(folder: str | Path, threads: int, precision: str = "f32") -> Callable[[dict], object]:
    """The same export folder compiled by OpenVINO (:mod:`toprune.openvino_backend`): f32, bf16 or its NNCF INT8."""
    from .openvino_backend import OpenVinoSession, graph_path

    folder = Path(folder)
    session = OpenVinoSession(graph_path(folder, precision), precision, threads)
    outputs = [json.loads((folder / CONFIG_FILENAME).read_text())["outputs"][0]]

    def run(batch: dict):
        return session.run(outputs, {k: v.numpy() if hasattr(v, "numpy") else v for k, v in batch.items()})[0]

    run.session = session  # for parity checks against ONNX Runtime on the same compiled model
    return run


def environment(threads: int) -> dict:
    from .costmodel import cpu_name

    cpu = cpu_name()
    import onnxruntime
    import transformers

    out = {
        "cpu": cpu,
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }
    try:
        import openvino

        out["openvino"] = openvino.__version__
    except ImportError:
        pass
    return out


def latency_runners(
    dense, pruned, tokenizer, workdir: str | Path, threads: int, backend: str = "pytorch", int8: bool = False
) -> dict[str, tuple[str, Callable]]:
    """The rows of a dense-vs-pruned latency table: {key: (label, runner)}.

    ``pytorch``: the dense ONNX Runtime row (the serving competitor), dense HF eager (SDPA) and the pruned runtime.
    ``onnxruntime``: both models exported the same way (ONNX vs ONNX). ``int8`` (either backend): plus both models'
    INT8 ONNX Runtime graphs (the competitor a CPU user already has, and pruning stacked on it).
    """
    from .export import export_onnx, quantize

    if backend not in ("pytorch", "onnxruntime"):
        raise ToPruneError(f"unknown backend {backend!r}; choose pytorch or onnxruntime")
    workdir = Path(workdir)
    export_onnx(dense, tokenizer, workdir / "dense")
    rows = {"dense_onnxruntime": ("dense ONNX Runtime", ort_runner(workdir / "dense", threads))}
    if backend == "pytorch":
        rows["dense"] = ("dense HF eager (SDPA)", torch_runner(dense))
        rows["pruned"] = ("pruned (toprune, PyTorch)", torch_runner(pruned))
    if backend == "onnxruntime":
        export_onnx(pruned, tokenizer, workdir / "pruned")
        rows["pruned_onnxruntime"] = ("pruned ONNX Runtime", ort_runner(workdir / "pruned", threads))
    if int8:
        try:
            if backend == "pytorch":
                export_onnx(pruned, tokenizer, workdir / "pruned")
            for name in ("dense", "pruned"):
                quantize(workdir / name)
                rows[f"{name}_onnxruntime_int8"] = (
                    f"{name} ONNX Runtime INT8",
                    ort_runner(workdir / name, threads, True),
                )
        except ToPruneError as err:
            if backend == "onnxruntime":
                raise
            # beside PyTorch the INT8 rows are extras (the demo's): the table the user came for still comes
            print(f"INT8 rows left out: {err}", file=sys.stderr)
            rows.pop("dense_onnxruntime_int8", None)
    return rows


def compare_latency(
    runners: dict[str, tuple[str, Callable]],
    tokenizer,
    texts_a,
    texts_b=None,
    batch_sizes=(1, 32),
    repeats=5,
    max_length: int = 512,
) -> dict:
    """Time every runner on the same batches with the same protocol: {key: {batch size: ms}, "timings": [...]}."""
    out = {key: {} for key in runners}
    out["timings"] = []
    for bs in batch_sizes:
        batches = make_batches(tokenizer, texts_a, texts_b, bs, max_length)  # the length that was evaluated
        for key, timing in time_interleaved(runners, batches, repeats).items():
            out[key][bs] = timing.ms_median
            out["timings"].append(timing.as_dict())
    return out
