"""OpenVINO as a second serving backend for export folders (dense or pruned graphs, unchanged).

OpenVINO reads our ONNX graph directly (the data-dependent survivor counts, TopK and gathers included). Precisions:

* ``f32``: every op in fp32; matches ONNX Runtime f32 to rounding.
* ``bf16``: OpenVINO's own default on CPUs with bf16 units (AMX, AVX512-BF16). Reduced precision perturbs the
  attention probabilities that rank tokens, so in a *pruned* graph near-ties can swap and other tokens survive:
  measure it (:func:`parity`) before serving a pruned graph in bf16.
* ``int8``: an NNCF post-training quantised copy (``model.ov_int8.xml``, :func:`quantize_openvino`, calibrated on
  training texts), its remaining ops in fp32; ``int8_bf16``: the same graph with the remaining ops in bf16
  (OpenVINO's default behaviour on such CPUs, the fastest a dense-model user gets).

Torch-free, like :mod:`toprune.serve`: sessions take and return numpy arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ToPruneError

OV_INT8_FILENAME = "model.ov_int8.xml"
PRECISIONS = ("f32", "bf16", "int8", "int8_bf16")
# the hint each precision compiles with; None: OpenVINO's own choice for this CPU (bf16 where it has the units)
_HINTS = {"f32": "f32", "bf16": "bf16", "int8": "f32", "int8_bf16": None}
CALIBRATION_EXAMPLES = 300  # NNCF's post-training quantisation needs a few hundred inputs, not the training set


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ToPruneError(f"unknown OpenVINO precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def _openvino():
    try:
        import openvino
    except ImportError:
        raise ToPruneError("the OpenVINO backend needs the openvino package: pip install 'toprune[openvino]'") from None
    return openvino


def graph_path(folder: str | Path, precision: str) -> Path:
    """The graph file a precision runs: the ONNX export itself, or the NNCF INT8 copy beside it."""
    from .serve import ONNX_FILENAME

    check_precision(precision)
    folder = Path(folder)
    path = folder / (OV_INT8_FILENAME if precision.startswith("int8") else ONNX_FILENAME)
    if not path.is_file():
        hint = (
            " (make it with toprune.openvino_backend.quantize_openvino or `toprune frontier`)"
            if precision.startswith("int8")
            else ""
        )
        raise ToPruneError(f"no {path.name} in {folder}{hint}")
    return path


class OpenVinoSession:
    """The slice of ``onnxruntime.InferenceSession`` that serving and timing use: ``run(names, feed)``."""

    def __init__(self, path: str | Path, precision: str = "f32", threads: int | None = None) -> None:
        ov = _openvino()
        check_precision(precision)
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}  # one request at a time, as the latency protocol times it
        if _HINTS[precision]:
            config["INFERENCE_PRECISION_HINT"] = _HINTS[precision]
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.model = core.read_model(str(path))
            self.compiled = core.compile_model(self.model, "CPU", config)
        except RuntimeError as exc:
            raise ToPruneError(f"OpenVINO cannot load {path}: {str(exc).splitlines()[0]}") from None
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.any_name for port in self.model.inputs]
        self.precision = precision
        self.hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        result = self.request.infer({k: v for k, v in feed.items() if k in self.input_names})
        names = output_names or [port.any_name for port in self.compiled.outputs]
        return [np.array(result[self.compiled.output(name)]) for name in names]


def _predictions(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """What a user reads off the outputs: the class (or each QA position's argmax); regression: the value."""
    parts = []
    for name, value in outputs.items():
        if name == "logits" and value.shape[-1] == 1:
            parts.append(np.round(value[..., 0], 3))  # regression: a changed score at 3 decimals
        elif name != "sentence_embedding":
            parts.append(value.argmax(-1).reshape(len(value), -1))
    return np.concatenate([p.reshape(len(p), -1) for p in parts], axis=1) if parts else np.zeros((0, 0))


def parity(session, reference, feeds: list[dict], outputs: list[str]) -> dict:
    """``session`` against ``reference`` (ONNX Runtime f32) on the same feeds: the largest |difference| over all
    outputs, and the share of examples whose prediction changed (for a pruned graph in reduced precision: the
    token selection flipping shows up here)."""
    worst, changed, total = 0.0, 0, 0
    wanted = {i.name for i in reference.get_inputs()}  # the tokenizer may give inputs the graph does not take
    for feed in feeds:
        got = dict(zip(outputs, session.run(outputs, feed)))
        want = dict(zip(outputs, reference.run(outputs, {k: v for k, v in feed.items() if k in wanted})))
        for name in outputs:
            worst = max(worst, float(np.abs(got[name] - want[name]).max()))
        pg, pw = _predictions(got), _predictions(want)
        if pg.size:
            changed += int((pg != pw).any(axis=1).sum())
        total += len(next(iter(feed.values())))
    return {
        "max_abs_diff": worst,
        "changed_predictions": changed,
        "examples": total,
        "changed_share": changed / max(total, 1),
    }


def quantize_openvino(folder: str | Path, feeds: list[dict], preset: str = "mixed") -> Path:
    """NNCF post-training INT8 of the folder's ONNX graph, calibrated on ``feeds`` (tokenised *training* texts,
    never dev); written as ``model.ov_int8.xml`` (+ .bin) beside it. ``preset``: NNCF's ``mixed`` (asymmetric
    activations, which suit GELU outputs) or ``performance``."""
    from .serve import ONNX_FILENAME

    ov = _openvino()
    try:
        import nncf
    except ImportError:
        raise ToPruneError("OpenVINO INT8 needs the nncf package: pip install 'toprune[openvino]'") from None
    if not feeds:
        raise ToPruneError("OpenVINO INT8 needs calibration inputs (training texts); none were given")
    folder = Path(folder)
    model = ov.Core().read_model(str(folder / ONNX_FILENAME))
    names = [port.any_name for port in model.inputs]
    dataset = nncf.Dataset([{k: v for k, v in feed.items() if k in names} for feed in feeds])
    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    if preset not in presets:
        raise ToPruneError(f"unknown NNCF preset {preset!r}; choose mixed or performance")
    import logging

    logging.getLogger("nncf").setLevel(logging.ERROR)  # its progress bars and advice are for its developers
    quantized = nncf.quantize(
        model, dataset, preset=presets[preset], model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds)
    )
    out = folder / OV_INT8_FILENAME
    ov.save_model(quantized, str(out))
    return out
