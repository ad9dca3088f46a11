"""Predict from raw text with an exported folder, ONNX Runtime and ``tokenizers``: neither torch nor transformers is
imported at serving time (tests/test_export.py checks it in a fresh interpreter).

    from toprune.serve import OnnxModel
    model = OnnxModel("exports/mrpc-top")
    model.predict(["The cat sat."], pairs=["A cat was sitting."])       # [{"label": ..., "score": ...}]
    qa = OnnxModel("exports/squad-top")
    qa.answer(["Who wrote it?"], ["It was written by Ada."])           # [{"answer": "Ada", ...}]
    OnnxModel("exports/mrpc-top", backend="openvino", precision="f32")  # the same graph in OpenVINO
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ToPruneError
from .fast_tokenizer import FastTokenizer
from .validate import check_tokenizer_files  # torch-free

ONNX_FILENAME = "model.onnx"
INT8_FILENAME = "model.int8.onnx"
CONFIG_FILENAME = "toprune_onnx.json"
BACKENDS = ("onnxruntime", "openvino")
OPENVINO_F32_TOLERANCE = 1e-3  # fp32 in both runtimes: only the order of float additions differs
# checked when an OpenVINO model loads: real sentences of different lengths, so padding and pruning both happen
PARITY_TEXTS = (
    "The cat sat on the mat while the dog slept by the door.",
    "Short one.",
    "Tokens are removed layer by layer, so later layers run on fewer tokens per example.",
    "A committee published the report after a long delay.",
)


def make_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class OnnxModel:
    """An export folder (``toprune export``) loaded into an ``onnxruntime.InferenceSession``, or into OpenVINO
    (``backend="openvino"``, :mod:`toprune.openvino_backend`; ``precision`` f32, bf16, int8 or int8_bf16, default
    f32 for a pruned graph, whose token selection reduced precision can flip, else OpenVINO's bf16). An OpenVINO
    model is checked against ONNX Runtime f32 on a few sample inputs when it loads (``self.parity``); f32 must match.
    """

    def __init__(
        self,
        folder: str | Path,
        threads: int | None = None,
        int8: bool = False,
        backend: str = "onnxruntime",
        precision: str | None = None,
    ) -> None:
        folder = Path(folder)
        if backend not in BACKENDS:
            raise ToPruneError(f"unknown backend {backend!r}; choose {' or '.join(BACKENDS)}")
        if backend == "onnxruntime" and precision not in (None, "f32"):
            raise ToPruneError(f"precision {precision!r} is for backend='openvino' (ONNX Runtime: int8=True or f32)")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ToPruneError(f"threads must be a positive integer or None, got {threads!r}")
        if not (folder / CONFIG_FILENAME).is_file():
            raise ToPruneError(f"{folder} is not an export folder (no {CONFIG_FILENAME}); run `toprune export`")
        try:
            self.config = json.loads((folder / CONFIG_FILENAME).read_text())
        except (OSError, ValueError) as exc:
            raise ToPruneError(f"{folder / CONFIG_FILENAME} is damaged ({type(exc).__name__}): export again") from None
        if not isinstance(self.config, dict) or not {"inputs", "outputs"} <= self.config.keys():
            raise ToPruneError(f"{folder / CONFIG_FILENAME} is damaged (no inputs/outputs): export again")
        graph = folder / (INT8_FILENAME if int8 and backend == "onnxruntime" else ONNX_FILENAME)
        if not graph.is_file():
            raise ToPruneError(f"no {graph.name} in {folder}" + (" (export with --int8)" if int8 else ""))
        check_tokenizer_files(folder, str(folder))
        self.tokenizer = FastTokenizer(folder, self.inputs)
        self.backend, self.parity = backend, None
        if backend == "onnxruntime":
            self.session = make_session(graph, threads)
        else:
            default = "int8" if int8 else "f32" if self.config.get("pruned") else "bf16"
            self.session = self._openvino(folder, threads, precision or default)
        # the length the model was trained at; exports before it was recorded held the model's limit instead
        qa = "start_logits" in self.config["outputs"]
        self.max_length = self.config["max_length"] if "max_length_source" in self.config else (384 if qa else 128)

    def _openvino(self, folder: Path, threads: int | None, precision: str):
        from .openvino_backend import OpenVinoSession, graph_path, parity

        session = OpenVinoSession(graph_path(folder, precision), precision, threads)
        sample = self.tokenizer(
            list(PARITY_TEXTS),
            list(reversed(PARITY_TEXTS)),
            padding=True,
            truncation=True,
            max_length=64,
            return_tensors="np",
        )
        feed = {k: np.asarray(v, dtype=np.int64) for k, v in sample.items() if k in self.inputs}
        self.parity = parity(session, make_session(folder / ONNX_FILENAME, threads), [feed], self.config["outputs"])
        if precision == "f32" and self.parity["max_abs_diff"] > OPENVINO_F32_TOLERANCE:
            raise ToPruneError(
                f"OpenVINO f32 disagrees with ONNX Runtime on {folder} (max abs diff "
                f"{self.parity['max_abs_diff']:.2e}); serve it with backend='onnxruntime'"
            )
        return session

    @property
    def inputs(self) -> list[str]:
        return self.config["inputs"]

    @property
    def max_positions(self) -> int:
        """Tokens one input may have: the position table (RoBERTa-style models spend two entries on padding)."""
        positions = int(self.config.get("max_position_embeddings") or self.config.get("max_length") or 512)
        if self.config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
            positions -= 2
        return positions

    def _check(
        self, name: str, values, other=None, other_name: str = "", batch_size: int = 1, max_length: int = 1
    ) -> list[str]:
        """The serving API refuses ambiguity: a str where a list is meant (it would be read character by
        character or as one text per slice), counts that differ, batch sizes and lengths that cannot run."""
        for label, seq in ((name, values), (other_name, other)):
            if seq is None:
                continue
            if isinstance(seq, str) or not hasattr(seq, "__len__"):
                raise ToPruneError(
                    f"{label} must be a list of strings, got {type(seq).__name__}; wrap one text as [text]"
                )
            bad = next((i for i, x in enumerate(seq) if not isinstance(x, str)), None)
            if bad is not None:
                raise ToPruneError(f"{label}[{bad}] is {type(seq[bad]).__name__}, not a string")
        if other is not None and len(other) != len(values):
            raise ToPruneError(f"{len(values)} {name} but {len(other)} {other_name}: give one per text")
        for label, value in (("batch_size", batch_size), ("max_length", max_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ToPruneError(f"{label} must be a positive integer, got {value!r}")
        if max_length > self.max_positions:
            raise ToPruneError(f"max_length {max_length} is beyond the model's {self.max_positions} positions")
        return list(values)

    def __call__(self, **inputs) -> dict[str, np.ndarray]:
        feed = {k: np.asarray(v, dtype=np.int64) for k, v in inputs.items() if k in self.inputs}
        return dict(zip(self.config["outputs"], self.session.run(self.config["outputs"], feed)))

    def encode(self, texts: list[str], batch_size: int = 32, max_length: int = 256) -> np.ndarray:
        """Sentence embeddings (len(texts), d) of an embedding export (:mod:`toprune.embedding_onnx`)."""
        if "sentence_embedding" not in self.config["outputs"]:
            raise ToPruneError("this export has no sentence embedding output; export it with export_embedding_onnx")
        texts = self._check("texts", texts, batch_size=batch_size, max_length=max_length)
        rows = [
            self(
                **self.tokenizer(
                    texts[i : i + batch_size],
                    None,
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="np",
                )
            )["sentence_embedding"]
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def predict(
        self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32, max_length: int | None = None
    ) -> list[dict]:
        """Sequence classification (label and probability) or regression (score) for each text (pair), truncated
        to ``max_length`` tokens (default: the length the model was trained at, from the export folder)."""
        max_length = self.max_length if max_length is None else max_length
        if "logits" not in self.config["outputs"]:
            raise ToPruneError("this export has no classification head; use answer() for question answering")
        texts = self._check("texts", texts, pairs, "pairs", batch_size, max_length)
        results = []
        for i in range(0, len(texts), batch_size):
            chunk_b = pairs[i : i + batch_size] if pairs is not None else None
            enc = self.tokenizer(
                texts[i : i + batch_size],
                chunk_b,
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="np",
            )
            logits = self(**enc)["logits"]
            if self.config["num_labels"] == 1:
                results += [{"score": float(x[0])} for x in logits]
                continue
            for probs in _softmax(logits):
                best = int(probs.argmax())
                label = self.config["id2label"].get(str(best), str(best))
                results.append({"label": label, "score": float(probs[best])})
        return results

    def answer(
        self,
        questions: list[str],
        contexts: list[str],
        max_length: int | None = None,
        stride: int | None = None,
        max_answer_length: int = 30,
        allow_no_answer: bool = False,
        threshold: float = 0.0,
        batch_size: int = 32,
    ) -> list[dict]:
        """Extractive QA, decoded exactly as evaluation decodes it (:func:`toprune.squad.postprocess`): the best
        context span over all windows; with ``allow_no_answer`` (SQuAD 2.0 models), "" when the null odds exceed
        ``threshold``. ``max_length``: the window (default: the training length), ``stride``: a third of it."""
        from .squad import eval_features, final_answers, postprocess

        if "start_logits" not in self.config["outputs"]:
            raise ToPruneError("this export has no question-answering head; use predict()")
        max_length = self.max_length if max_length is None else max_length
        stride = max_length // 3 if stride is None else stride
        questions = self._check("questions", questions, contexts, "contexts", batch_size, max_length)
        if not isinstance(stride, int) or not 0 <= stride < max_length:
            raise ToPruneError(f"stride must be an integer in 0..{max_length - 1} (below max_length), got {stride!r}")
        examples = [{"id": str(i), "question": q, "context": c} for i, (q, c) in enumerate(zip(questions, contexts))]
        features = eval_features(examples, self.tokenizer, max_length, stride)
        rows = [dict(zip(features.inputs, values)) for values in zip(*features.inputs.values())]
        starts, ends = [], []
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            out = self(**self.tokenizer.pad(chunk, return_tensors="np"))
            starts += [out["start_logits"][b, : len(r["input_ids"])] for b, r in enumerate(chunk)]
            ends += [out["end_logits"][b, : len(r["input_ids"])] for b, r in enumerate(chunk)]
        predictions = postprocess(examples, features, starts, ends, max_answer_length=max_answer_length)
        answers, null_odds = final_answers(examples, predictions, "v2.0" if allow_no_answer else "v1.1", threshold)
        return [{"answer": answers[e["id"]], "null_odds": null_odds[e["id"]]} for e in examples]
