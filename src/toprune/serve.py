"""Predict from raw text with an exported folder and ONNX Runtime: no PyTorch model code at serving time.

    from toprune.serve import OnnxModel
    model = OnnxModel("exports/mrpc-top")
    model.predict(["The cat sat."], pairs=["A cat was sitting."])       # [{"label": ..., "score": ...}]
    qa = OnnxModel("exports/squad-top")
    qa.answer(["Who wrote it?"], ["It was written by Ada."])           # [{"answer": "Ada", ...}]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ToPruneError
from .export import CONFIG_FILENAME, INT8_FILENAME, ONNX_FILENAME, make_session


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class OnnxModel:
    """An export folder (``toprune export``) loaded into an ``onnxruntime.InferenceSession``."""

    def __init__(self, folder: str | Path, threads: int | None = None, int8: bool = False) -> None:
        from transformers import AutoTokenizer

        folder = Path(folder)
        if not (folder / CONFIG_FILENAME).is_file():
            raise ToPruneError(f"{folder} is not an export folder (no {CONFIG_FILENAME}); run `toprune export`")
        self.config = json.loads((folder / CONFIG_FILENAME).read_text())
        graph = folder / (INT8_FILENAME if int8 else ONNX_FILENAME)
        if not graph.is_file():
            raise ToPruneError(f"no {graph.name} in {folder}" + (" (export with --int8)" if int8 else ""))
        self.session = make_session(graph, threads)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.inputs = self.config["inputs"]
        # the length the model was trained at; exports before it was recorded held the model's limit instead
        qa = "start_logits" in self.config["outputs"]
        self.max_length = self.config["max_length"] if "max_length_source" in self.config else (384 if qa else 128)

    def __call__(self, **inputs) -> dict[str, np.ndarray]:
        feed = {k: np.asarray(v, dtype=np.int64) for k, v in inputs.items() if k in self.inputs}
        return dict(zip(self.config["outputs"], self.session.run(self.config["outputs"], feed)))

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32,
                max_length: int | None = None) -> list[dict]:
        """Sequence classification (label and probability) or regression (score) for each text (pair), truncated
        to ``max_length`` tokens (default: the length the model was trained at, from the export folder)."""
        max_length = max_length or self.max_length
        if "logits" not in self.config["outputs"]:
            raise ToPruneError("this export has no classification head; use answer() for question answering")
        results = []
        for i in range(0, len(texts), batch_size):
            chunk_b = pairs[i : i + batch_size] if pairs is not None else None
            enc = self.tokenizer(texts[i : i + batch_size], chunk_b, padding=True, truncation=True,
                                 max_length=max_length, return_tensors="np")
            logits = self(**enc)["logits"]
            if self.config["num_labels"] == 1:
                results += [{"score": float(x[0])} for x in logits]
                continue
            for probs in _softmax(logits):
                best = int(probs.argmax())
                results.append({"label": self.config["id2label"].get(str(best), str(best)), "score": float(probs[best])})
        return results

    def answer(self, questions: list[str], contexts: list[str], max_length: int | None = None,
               stride: int | None = None,
               max_answer_length: int = 30, allow_no_answer: bool = False, threshold: float = 0.0,
               batch_size: int = 32) -> list[dict]:
        """Extractive QA, decoded exactly as evaluation decodes it (:func:`toprune.squad.postprocess`): the best
        context span over all windows; with ``allow_no_answer`` (SQuAD 2.0 models), "" when the null odds exceed
        ``threshold``. ``max_length``: the window (default: the training length), ``stride``: a third of it."""
        from .squad import eval_features, final_answers, postprocess

        if "start_logits" not in self.config["outputs"]:
            raise ToPruneError("this export has no question-answering head; use predict()")
        max_length = max_length or self.max_length
        stride = max_length // 3 if stride is None else stride
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
