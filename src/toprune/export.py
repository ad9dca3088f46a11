"""Serve pruned models with ONNX Runtime alone: one exported graph that scores, selects, gathers and restores.

``export_onnx`` traces the pruned runtime with the torch.export-based ONNX exporter. Per-example token removal
stays *inside* the graph: each pruning layer's survivor count is a symbolic length computed from the data (the
longest survivor list of the batch), so later layers really run on fewer tokens in ONNX Runtime too, and the
restore step scatters every token back for token-level heads (QA start/end logits; a head that reads the CLS row
only gets a graph without it, see :func:`reads_first_row_only`). Batch and sequence axes are dynamic. The folder
gets ``model.onnx``, the tokenizer and ``toprune_onnx.json`` (inputs, outputs, labels, plan), so it serves with
onnxruntime and tokenizers alone (see :class:`OnnxModel`). Every export is checked against
PyTorch on a mixed-length padded batch and on a batch of one before it is kept.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import ToPruneError
from .runtime import pruning_state
from .safeio import atomic_write_text, check_writable
from .serve import CONFIG_FILENAME, INT8_FILENAME, ONNX_FILENAME, make_session  # torch-free
from .validate import check_trained

PARITY_TOLERANCE = 1e-4
_OUTPUTS = ("logits", "start_logits", "end_logits", "sentence_embedding")  # the last: embedding_onnx
_SAMPLE = [
    (
        "Who wrote the report that the committee finally published last week?",
        "The committee published the report, written by two economists, after a long delay.",
    ),
    ("A short one.", "Yes."),
    ("Tokens are removed layer by layer.", "The sequence gets shorter at every pruning layer, per example."),
]


@contextlib.contextmanager
def _quiet_logs():
    """The exporter and the quantiser log advice meant for their developers (torchvision ops, pre-processing)."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def sample_batches(tokenizer, max_length: int = 128) -> list[dict]:
    """Inputs for tracing and parity: a padded batch of mixed lengths, and a batch of one."""
    questions, contexts = zip(*_SAMPLE)
    mixed = tokenizer(
        list(questions), list(contexts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    one = tokenizer([questions[1]], [contexts[1]], return_tensors="pt")
    return [dict(mixed), dict(one)]


def _outputs(model, batch: dict) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**batch)
    return {k: out[k] for k in _OUTPUTS if k in out}


def check_parity(model, session, batches: list[dict]) -> float:
    """Largest |PyTorch - ONNX Runtime| over all outputs of the given batches."""
    worst = 0.0
    for batch in batches:
        expected = _outputs(model, batch)
        got = session.run(list(expected), {k: v.numpy() for k, v in batch.items()})
        for name, value in zip(expected, got):
            worst = max(worst, float(np.abs(value - expected[name].numpy()).max()))
    return worst


def reads_first_row_only(model, batch: dict) -> bool:
    """Whether the model's outputs depend on the encoder output's first row alone (sequence classification and
    regression heads: a pooler or head that reads the CLS row). Checked, not assumed from the class: the other rows
    are replaced by noise, twice, and the outputs must not move. Token-level heads (QA) and pooled embeddings fail.
    Such a model needs no restore step: the dropped tokens' states are never read."""
    from .adapters import find_encoder

    generator = torch.Generator().manual_seed(0)

    def noise(module, args, output):
        hidden = output[0].clone()
        hidden[:, 1:] = torch.randn(hidden[:, 1:].shape, generator=generator, dtype=hidden.dtype) * 10.0
        output["last_hidden_state"] = hidden
        return output

    reference = _outputs(model, batch)
    handle = find_encoder(model).register_forward_hook(noise)
    try:
        noisy = [_outputs(model, batch) for _ in range(2)]
    finally:
        handle.remove()
    return all(torch.equal(reference[k], out[k]) for out in noisy for k in reference)


def fuse_transformer_ops(model, path: Path, batches: list[dict]) -> dict[str, int]:
    """onnxruntime's transformer optimizer (the fusions Optimum's O2 level applies) on the graph at ``path``, in
    place, kept only if it still matches PyTorch; returns the fused operators' counts ({} when nothing was kept).
    On our torch.export graphs it fuses BiasGelu and LayerNormalization (at opset 18 also SkipLayerNormalization in
    dense graphs; at opset 23 the dense graphs' ONNX Attention nodes): 2-12% faster dense graphs, 2-28% faster pruned
    ones (benchmarks/README.md section 4). The pruned graphs keep their explicit attention: scores need the
    probabilities."""
    from onnxruntime.transformers.optimizer import optimize_model

    fused = path.with_name(path.name + ".fused")
    try:
        # it prints shape-inference notes to stdout, which must stay clean for `toprune bench --json`
        with warnings.catch_warnings(), _quiet_logs(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            graph = optimize_model(
                str(path),
                model_type="bert",
                num_heads=model.config.num_attention_heads,
                hidden_size=model.config.hidden_size,
            )
            graph.save_model_to_file(str(fused))
        counts = {k: int(v) for k, v in graph.get_fused_operator_statistics().items() if v}
        if not counts or check_parity(model, make_session(fused, threads=1), batches) > PARITY_TOLERANCE:
            return {}
        fused.replace(path)
        return counts
    except Exception:  # the optimizer's pattern matching is best effort; the plain graph is already checked
        return {}
    finally:
        fused.unlink(missing_ok=True)


def export_onnx(
    model,
    tokenizer,
    folder: str | Path,
    check: bool = True,
    opset: int = 23,
    samples: list[dict] | None = None,
    fuse: bool = True,
    task: dict | None = None,
) -> Path:
    """Export a dense or pruned HF model (with its tokenizer and a small config) to ``folder``; returns the folder.

    ``samples``: batches to trace with (the first) and to check parity on (all); default: real text, tokenised.
    ``fuse``: then apply onnxruntime's transformer fusions where they keep parity (see :func:`fuse_transformer_ops`).
    ``task``: the model's saved task (``toprune_task.json``): its training length and columns go into the folder.
    """
    state = pruning_state(model)
    if state is not None and state.random_scores is not None:
        raise ToPruneError("the random-dropping baseline is not exportable (it is a floor for comparison only)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    batches = samples or sample_batches(tokenizer)
    names = list(batches[0])
    outputs = list(_outputs(model, batches[0]))
    batch_dim = torch.export.Dim("batch")
    seq_dim = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    # a head that reads the CLS row only (classification, regression) never sees the restored tokens: no restore step
    restore = state is None or outputs != ["logits"] or not reads_first_row_only(model, batches[0])
    if state is not None:
        state.traceable = True  # the masked path everywhere, symbolic survivor counts
        state.restore = restore
        state.rank_table_size = model.config.max_position_embeddings  # the longest input the graph takes
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_logs():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (),
                kwargs=batches[0],
                input_names=names,
                output_names=outputs,
                dynamic_shapes={k: {0: batch_dim, 1: seq_dim} for k in names},
                dynamo=True,
                opset_version=opset,
                verbose=False,
            )
    finally:
        if state is not None:
            state.traceable, state.restore, state.rank_table_size = False, True, None
    tmp = folder / (ONNX_FILENAME + ".tmp")
    try:
        program.save(str(tmp))
        if check:
            worst = check_parity(model, make_session(tmp, threads=1), batches)
            if worst > PARITY_TOLERANCE:
                raise ToPruneError(f"exported graph disagrees with PyTorch (max abs diff {worst:.2e}); not saved")
        fused = fuse_transformer_ops(model, tmp, batches) if fuse else {}
        tmp.replace(folder / ONNX_FILENAME)
    finally:
        tmp.unlink(missing_ok=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    config = model.config
    meta = {
        "format_version": 1,
        "inputs": names,
        "outputs": outputs,
        "pruned": state is not None,
        "model_type": config.model_type,
        "architectures": getattr(config, "architectures", None),
        "num_labels": config.num_labels,
        "id2label": {str(k): v for k, v in config.id2label.items()},
        "problem_type": config.problem_type,
        **serving_task(config, outputs, task),
        "plan": state.plan.to_dict() if state is not None else None,
        "restores_tokens": state is not None and restore,  # False: the graph skips the restore (first-row head)
        "opset": opset,
        "fused_ops": fused,
    }
    atomic_write_text(folder / CONFIG_FILENAME, json.dumps(meta, indent=1) + "\n")
    return folder


def serving_task(config, outputs: list[str], task: dict | None) -> dict:
    """What serving needs to tokenise and read the outputs as the model was trained: the max length, the task
    type, the label names in id order and the text columns (from the saved task when there is one)."""
    qa = "start_logits" in outputs
    kind = "question answering" if qa else "regression" if config.num_labels == 1 else "classification"
    out = {
        "task_type": (task or {}).get("task_type", kind),
        "labels": None if qa or config.num_labels == 1 else [config.id2label[i] for i in range(config.num_labels)],
        "text_columns": (task or {}).get("text_columns"),
        "max_position_embeddings": config.max_position_embeddings,
    }
    if task and task.get("max_length"):
        out.update(max_length=int(task["max_length"]), max_length_source="the training length (toprune_task.json)")
    else:  # a model without its task: the length toprune trains at by default
        out.update(max_length=384 if qa else 128, max_length_source="toprune's default (no toprune_task.json)")
    return out


def quantize(folder: str | Path, variant: str | None = None, feeds: list[dict] | None = None) -> Path:
    """INT8 copy of the exported graph (onnxruntime's quantiser), written beside it as ``model.int8.onnx``.
    ``variant``: one of :data:`toprune.quantize.VARIANTS` (default: the one that keeps the pruning decisions' Q/K
    projections fp32, plain dynamic INT8 on a dense graph); ``feeds``: calibration inputs of the static variants."""
    from .quantize import DEFAULT_VARIANT, quantize_variant

    folder = Path(folder)
    quantize_variant(folder / ONNX_FILENAME, folder / INT8_FILENAME, variant or DEFAULT_VARIANT, feeds)
    return folder / INT8_FILENAME


def export_folder(
    model_path: str, output: str | Path, int8: bool = False, variant: str | None = None, data=None
) -> Path:
    """``toprune export``: a saved (pruned or dense) model folder to an ONNX serving folder; returns the folder.
    With ``int8`` and task ``data`` (:class:`toprune.train.TaskData` with a held-out
    slice), every INT8 variant (or only ``variant``) is scored on the held-out training slice and the best is kept;
    the dev metric of the fp32 and INT8 graphs goes into ``toprune_onnx.json`` (key ``int8``). Without data: the
    default variant, no metric."""
    from .pretrained import load_model, load_tokenizer
    from .quantize import VARIANTS, choose_variant
    from .task_spec import read_task

    output = check_writable(output)  # before the model loads and the export runs
    model, tokenizer = load_model(model_path), load_tokenizer(model_path)
    check_trained(model, model_path)
    if output.exists() and any(output.iterdir()) and not (output / CONFIG_FILENAME).exists():
        raise ToPruneError(f"{output} exists and is not an export folder; give a new or empty --output")
    export_onnx(model, tokenizer, output, task=read_task(model_path))
    report = None
    if int8 and data is not None:
        report = choose_variant(output, data, tokenizer, VARIANTS if variant in (None, "auto") else (variant,))
    elif int8:
        quantize(output, None if variant == "auto" else variant)
        report = {"variant": None if variant in (None, "auto") else variant, "selected_on": None}
    elif (output / INT8_FILENAME).exists():
        (output / INT8_FILENAME).unlink()  # a stale INT8 graph of an earlier export must not survive
    if report is not None:
        from .quantize import DEFAULT_VARIANT

        report["variant"] = report["variant"] or DEFAULT_VARIANT
        meta = json.loads((output / CONFIG_FILENAME).read_text())
        atomic_write_text(output / CONFIG_FILENAME, json.dumps({**meta, "int8": report}, indent=1) + "\n")
    return output


def export_command(args, data_dir) -> None:
    """``toprune export``: the folder, and with --int8 the variant measured on the task's data when it is there
    (the dev metric of INT8 beside fp32 is always worth reporting)."""
    from .pretrained import load_tokenizer
    from .quantize import int8_data

    data, why = None, ""
    if args.int8:
        data, why = int8_data(load_tokenizer(args.model), args.int8_task, getattr(args, "saved_task", None), data_dir)
        if data is None and args.int8_task:
            raise ToPruneError(f"--int8 cannot choose on --task {args.int8_task}: {why}")
    folder = export_folder(args.model, args.output, int8=args.int8, variant=args.int8_variant, data=data)
    print(
        f"wrote {folder}: model.onnx{' + model.int8.onnx' if args.int8 else ''}, tokenizer, toprune_onnx.json "
        f"(checked against PyTorch: max abs diff <= 1e-4)"
    )
    report = json.loads((Path(folder) / "toprune_onnx.json").read_text()).get("int8") if args.int8 else None
    if report and report.get("dev_metric_int8") is not None:
        print(
            f"INT8 variant {report['variant']} ({report['selected_on']}); dev {report['metric']}: fp32 "
            f"{report['dev_metric_fp32']:.2f}, INT8 {report['dev_metric_int8']:.2f}"
        )
    elif report:
        print(f"INT8 variant {report['variant']} (not measured: {why})")
