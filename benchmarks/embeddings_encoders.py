"""How each runtime of `embeddings_bench.py` encodes: one dict per row with ``encode(texts) -> embeddings``,
``batches(texts, B)`` (tokenised before timing), ``run(batch)`` (the timed call) and, on the PyTorch path,
``flops(texts)`` (the unpadded reduction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from embeddings_st_worker import _st_tokenize, chunks  # beside this script


def torch_encoder(model, tokenizer, pooling, max_length: int):
    """(encode(texts) -> embeddings, make_batches(texts, B), run(batch), flops(texts) -> unpadded reduction)."""
    import torch

    from toprune.benchmark import make_batches
    from toprune.embedding import embed
    from toprune.embedding_eval import encode_with_flops
    from toprune.runtime import pruning_state

    state = pruning_state(model)

    def run(batch):
        with torch.inference_mode():
            return embed(model, batch, pooling, state)

    return {
        "encode": lambda texts: encode_with_flops(model, tokenizer, texts, pooling, 64, max_length)[0],
        "batches": lambda texts, size: [dict(b) for b in make_batches(tokenizer, texts, None, size, max_length)],
        "run": run,
        "flops": lambda texts: encode_with_flops(model, tokenizer, texts, pooling, 64, max_length)[1] or 1.0,
    }


def st_torch_encoder(st, max_length: int):
    import torch

    st.max_seq_length = max_length

    def run(features):
        with torch.inference_mode():
            return st.forward(dict(features))["sentence_embedding"]

    return {
        "encode": lambda texts: st.encode(texts, batch_size=64, convert_to_numpy=True),
        "batches": lambda texts, size: [_st_tokenize(st, c) for c in chunks(texts, size)],
        "run": run,
    }


def numpy_encoder(call, tokenizer, inputs: list[str], max_length: int):
    """ONNX Runtime or OpenVINO: ``call(feed) -> (B, d)`` on numpy int64 inputs."""
    from toprune.benchmark import make_batches

    def batches(texts, size):
        return [
            {k: v.numpy() for k, v in b.items() if k in inputs}
            for b in make_batches(tokenizer, texts, None, size, max_length)
        ]

    def encode(texts):
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.concatenate([call(b) for b in batches([texts[i] for i in order], 64)])
        result = np.empty_like(out)
        result[order] = out
        return result

    return {"encode": encode, "batches": batches, "run": call}


def ort_call(folder: Path, int8: bool, threads: int):
    from toprune.serve import INT8_FILENAME, ONNX_FILENAME, make_session

    session = make_session(folder / (INT8_FILENAME if int8 else ONNX_FILENAME), threads)
    return lambda feed: session.run(["sentence_embedding"], feed)[0]


def openvino_call(folder: Path, threads: int):
    """OpenVINO on the fp32 export, compiled as the INT8 row and the frontier compile (``OpenVinoSession``: latency
    hint, one request), in bf16 where the CPU has the units, else f32; returns the call and the precision it ran."""
    from toprune.openvino_backend import OpenVinoSession, graph_path

    session = OpenVinoSession(graph_path(folder, "bf16"), "bf16", threads)
    return (lambda feed: session.run(["sentence_embedding"], feed)[0]), precision_name(session.hint)


def precision_name(hint) -> str:
    """'bfloat16' from OpenVINO's "<Type: 'bfloat16'>" (the hint's text as it prints)."""
    text = str(hint)
    return text.split("'")[-2] if text.count("'") >= 2 else text
