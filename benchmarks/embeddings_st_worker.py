"""The sentence-transformers side of `embeddings_bench.py`: run by that script with the python of a venv that has
sentence-transformers' ONNX or OpenVINO backend (they do not install beside toprune's transformers; see
benchmarks/README.md section 9). Imports neither toprune nor anything sentence-transformers does not need; also holds
the timing loop both sides share.

    /work/venv-st/bin/python benchmarks/embeddings_st_worker.py SPEC.json   # written by embeddings_bench.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


# -- timing (torch-free: the sentence-transformers worker runs it in another venv) ---------------------------------
def time_passes(run, batches: list, repeats: int, warmup: int = 3) -> dict:
    """Passages per second: a warm-up on the longest batch and the first ``warmup - 1``, then ``repeats`` timed
    passes over every batch; the median pass counts."""
    longest = max(range(len(batches)), key=lambda i: _shape(batches[i]))
    for i in {longest, *range(min(warmup - 1, len(batches)))}:
        run(batches[i])
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            run(batch)
        seconds.append(time.perf_counter() - started)
    count = sum(_shape(b)[0] for b in batches)
    median = statistics.median(seconds)
    return {"passages_per_s": count / median, "seconds_median": median, "seconds_all": seconds, "passages": count}


def _shape(batch) -> tuple[int, int]:
    ids = batch["input_ids"]
    return tuple(ids.shape)


def chunks(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def st_worker(spec_path: str) -> None:
    """In the sentence-transformers venv: the dense model through its own ONNX / ONNX-INT8 / OpenVINO backends."""
    spec = json.loads(Path(spec_path).read_text())
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer

    threads, out = spec["threads"], Path(spec["out"])
    texts = json.loads(Path(spec["texts"]).read_text())
    folder = out / "st-model"
    if not folder.exists():
        shutil.copytree(spec["model"], folder)
    results = {"versions": _versions()}
    for backend in spec["backends"]:
        try:
            st = _st_load(SentenceTransformer, folder, backend, threads)
        except Exception as exc:  # noqa: BLE001 - recorded in the results, the other backends still run
            results[backend] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            continue
        row = _st_accuracy(st, texts, backend, out) if spec["accuracy"] else {}
        try:  # the precision OpenVINO chose (bf16 where the CPU has AMX, unless told otherwise)
            row["precision"] = str(
                st[0].auto_model.request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")
            )
        except Exception:  # noqa: BLE001 - not an OpenVINO model, or another optimum-intel layout
            pass
        if spec["speed"]:
            for size in spec["batch_sizes"]:
                batches = [_st_tokenize(st, chunk) for chunk in chunks(texts["timed"], size)]
                with torch.inference_mode():
                    row[f"b{size}"] = time_passes(lambda b, st=st: st.forward(dict(b)), batches, spec["repeats"])
        results[backend] = row
    Path(out / "st_results.json").write_text(json.dumps(results, indent=1))


def _versions() -> dict:
    import importlib.metadata as md

    names = (
        "sentence-transformers",
        "transformers",
        "torch",
        "onnxruntime",
        "optimum",
        "optimum-onnx",
        "optimum-intel",
        "openvino",
    )
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    return found


def _st_load(cls, folder: Path, backend: str, threads: int):
    if backend == "st-openvino":
        st = cls(str(folder), backend="openvino", model_kwargs={"ov_config": {"INFERENCE_NUM_THREADS": threads}})
        if not (folder / "openvino" / "openvino_model.xml").exists():
            st.save_pretrained(str(folder))  # the export, kept for the next run
        return st
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    kwargs = {"provider": "CPUExecutionProvider", "session_options": options}
    if backend == "st-onnx":
        st = cls(str(folder), backend="onnx", model_kwargs=kwargs)
        if not (folder / "onnx" / "model.onnx").exists():
            st.save_pretrained(str(folder))  # the export, kept for the INT8 row
        return st
    from sentence_transformers import export_dynamic_quantized_onnx_model

    int8 = folder / "onnx" / "model_qint8_avx512_vnni.onnx"
    if not int8.exists():
        export_dynamic_quantized_onnx_model(cls(str(folder), backend="onnx"), "avx512_vnni", str(folder))
    return cls(str(folder), backend="onnx", model_kwargs={**kwargs, "file_name": "onnx/" + int8.name})


def _st_accuracy(st, texts: dict, backend: str, out: Path) -> dict:
    arrays = {
        name: st.encode(texts[name], batch_size=64, convert_to_numpy=True)
        for name in ("passages", "queries", "stsb_a", "stsb_b")
    }
    np.savez(out / f"{backend}.npz", **arrays)
    return {"embeddings": str(out / f"{backend}.npz")}


def _st_tokenize(st, texts):
    """sentence-transformers >= 6 calls it ``preprocess``; ``tokenize`` before."""
    return (st.preprocess if hasattr(st, "preprocess") else st.tokenize)(texts)


if __name__ == "__main__":
    st_worker(sys.argv[1])
