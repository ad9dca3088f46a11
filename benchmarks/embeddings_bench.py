"""Corpus-encoding throughput and accuracy of all-MiniLM-L6-v2, dense vs token-pruned, per runtime: the speed rows of
issue 23 (`results/embeddings_minilm.json`).

Corpus: every paragraph of the SQuAD v1.1 dev file (2,067), in token-length order by default (as
sentence-transformers' own ``encode`` sorts them; ``--order file`` keeps the file's order), cut into batches of B and
padded to each batch's longest paragraph (dynamic padding), tokenised before timing: only the model call is timed
(encoder + pooling). A row's throughput is the number of passages over the median of ``--repeats`` timed passes,
after a warm-up of a few batches (the longest one among them). Speed-ups are against the dense fp32 PyTorch row
(our HF path, SDPA) at the same batch size.

Rows: dense PyTorch (our HF path; sentence-transformers' own forward), dense ONNX Runtime fp32 / INT8 (toprune's
export, dynamic INT8 of the weights' MatMuls), dense OpenVINO on that ONNX graph (its default precision: bf16 on a
CPU with AMX; and NNCF post-training INT8 calibrated on the training articles' text), the static plan made
without training at each ``--static-targets`` and every pruned model folder in ``--models`` (PyTorch, ONNX Runtime
fp32 / INT8, OpenVINO), and the competitor rows, sentence-transformers' own ONNX /
ONNX-INT8 / OpenVINO backends, run by ``--st-python`` (a venv with sentence-transformers[onnx,openvino]) in a
subprocess. Accuracy of every row from its own embeddings: SQuAD retrieval (held-out articles' questions against all
paragraphs: recall@1/5/10, MRR) and STS-B dev Spearman; the unpadded FLOPs reduction is measured on the corpus.

The output file is merged row by row (key: method, target, backend, int8, model), so accuracy (slow, needs no quiet
machine: ``--skip-speed``) and speed (``--skip-accuracy``, on an idle machine) can be run apart.

    python benchmarks/embeddings_bench.py --threads 2 --models runs/emb-top/best --st-python /work/venv-st/bin/python
    python benchmarks/embeddings_bench.py --max-passages 64 --max-queries 16 --max-pairs 32 --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
from embeddings_encoders import numpy_encoder, openvino_call, ort_call, precision_name, st_torch_encoder, torch_encoder
from embeddings_inputs import Inputs, calibration_texts
from embeddings_st_worker import time_passes  # beside this script

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
ST_BACKENDS = ("st-onnx", "st-onnx-int8", "st-openvino")  # embeddings_st_worker.py, in another venv
KEY = ("method", "target", "backend", "int8", "model")


# -- main ----------------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated toprune embedding model folders (pruned)")
    parser.add_argument("--static-targets", default="1.5x,2x,3x", help="static plans made without training ('' none)")
    parser.add_argument(
        "--static-pooling",
        choices=["restored", "survivors"],
        default="survivors",
        help="which tokens the static plans' mean pools (default %(default)s)",
    )
    parser.add_argument(
        "--static-scorer",
        default="attention",
        help="how the static plans rank tokens (a ScoringSpec kind: attention, value, random; default %(default)s)",
    )
    parser.add_argument(
        "--backends",
        default="pytorch,sentence-transformers,onnxruntime,onnxruntime-int8,openvino,openvino-int8,"
        + ",".join(ST_BACKENDS),
        help="which runtimes (rows) to run; the default: all",
    )
    parser.add_argument(
        "--st-python",
        help="python of a venv with sentence-transformers[onnx,openvino] (the "
        "st-* rows); without it those rows are skipped",
    )
    parser.add_argument("--batch-sizes", default="32,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--order", choices=["length", "file"], default="length")
    parser.add_argument("--max-length", type=int, default=256, help="the model's sentence-transformers limit")
    parser.add_argument("--skip-speed", action="store_true", help="accuracy only (needs no idle machine)")
    parser.add_argument("--skip-accuracy", action="store_true", help="speed only (run it on an idle machine)")
    parser.add_argument(
        "--speed-passages",
        type=int,
        help="time on this many paragraphs, evenly spaced in the "
        "timed order (the same length spread; default: all); accuracy always uses every paragraph",
    )
    parser.add_argument("--max-passages", type=int, help="smoke test: this many paragraphs (the gold ones first)")
    parser.add_argument("--max-queries", type=int, help="smoke test: the first this many held-out questions")
    parser.add_argument("--max-pairs", type=int, help="smoke test: the first this many STS-B pairs")
    parser.add_argument(
        "--no-dense",
        action="store_true",
        help="no dense rows from toprune's venv (e.g. adding a "
        "trained model to an existing file: speed-ups use the file's dense PyTorch row)",
    )
    parser.add_argument("--dense", default="minilm", help="the dense sentence-transformers model (default minilm)")
    parser.add_argument("--glue-dir", default=str(DATA / "glue"))
    parser.add_argument("--squad-file", default=str(DATA / "squad" / "dev-v1.1.json"))
    parser.add_argument(
        "--workdir",
        default=str(HERE.parent / "runs" / "embeddings-bench"),
        help="ONNX exports and the sentence-transformers worker's files (kept between runs)",
    )
    parser.add_argument("--output", default=str(HERE / "results" / "embeddings_minilm.json"))
    return parser.parse_args(argv)


def model_specs(args, dims, lengths):
    """(method, target, model name, loader) of the dense model, the static plans and the given folders."""
    import toprune
    from toprune.flops import parse_target
    from toprune.plan import PLAN_FILENAME, PruningPlan, default_pruning_layers
    from toprune.pretrained import resolve_model
    from toprune.static import static_plan

    dense = resolve_model(args.dense)
    if not args.no_dense:
        yield "dense", None, Path(dense).name, dense, None, lambda: toprune.load_model(dense, "AutoModel")
    for target in filter(None, args.static_targets.split(",")):

        def static(target=target):
            model = toprune.load_model(dense, "AutoModel")
            layers = default_pruning_layers(dims.num_layers)
            plan = static_plan(dims, layers, [lengths], parse_target(target), scoring=args.static_scorer)
            plan.meta = {**plan.meta, "pooling_tokens": args.static_pooling}
            toprune.apply_pruning(model, plan)
            return model

        scored = "" if args.static_scorer == "attention" else f", {args.static_scorer} scorer"
        yield "static", target, f"static-{target} (no training{scored})", dense, args.static_pooling, static
    for folder in filter(None, args.models.split(",")):
        meta = (
            PruningPlan.load(folder, num_layers=dims.num_layers).meta if Path(folder, PLAN_FILENAME).is_file() else {}
        )
        method = meta.get("method", "top")
        yield (
            "static" if method == "given" else method,  # a fixed plan fine-tuned (--init-from): the static family
            meta.get("target"),
            folder,
            folder,
            meta.get("pooling_tokens", "restored"),
            lambda folder=folder: toprune.load_model(folder, "AutoModel"),
        )


def backend_rows(args, model, tokenizer, pooling, name: str, folder, dense: bool):
    """(backend, int8, note, encoder factory) for each runtime asked for."""
    from toprune.embedding_onnx import export_embedding_onnx
    from toprune.export import quantize

    wanted = args.backends.split(",")
    export = Path(args.workdir) / name.replace("/", "_").replace(" ", "_")

    def exported(int8=False):
        if not (export / "model.onnx").exists():
            export_embedding_onnx(model, tokenizer, pooling, export)
        if int8 and not (export / "model.int8.onnx").exists():
            quantize(export)
        return json.loads((export / "toprune_onnx.json").read_text())["inputs"]

    if "pytorch" in wanted:
        yield (
            "pytorch",
            False,
            "toprune's HF path (SDPA when dense)",
            lambda: torch_encoder(model, tokenizer, pooling, args.max_length),
        )
    if dense and "sentence-transformers" in wanted:

        def st_torch():
            from sentence_transformers import SentenceTransformer

            return st_torch_encoder(SentenceTransformer(str(folder), device="cpu"), args.max_length)

        yield "sentence-transformers", False, "SentenceTransformer(...).forward, torch backend", st_torch
    for int8 in (False, True):
        if ("onnxruntime-int8" if int8 else "onnxruntime") in wanted:

            def ort(int8=int8):
                inputs = exported(int8)  # first: the session opens the graph this writes
                return numpy_encoder(ort_call(export, int8, args.threads), tokenizer, inputs, args.max_length)

            yield "onnxruntime", int8, "toprune export" + (", dynamic INT8 MatMuls" if int8 else ""), ort
    if "openvino" in wanted:

        def openvino():
            inputs = exported()
            call, precision = openvino_call(export, args.threads)
            encoder = numpy_encoder(call, tokenizer, inputs, args.max_length)
            encoder["note"] = f"OpenVINO {precision} on toprune's ONNX export"
            return encoder

        yield "openvino", False, "OpenVINO on toprune's ONNX export", openvino
    if "openvino-int8" in wanted:

        def openvino_int8():
            from toprune.openvino_backend import OV_INT8_FILENAME, OpenVinoSession, graph_path, quantize_openvino

            inputs = exported()
            if not (export / OV_INT8_FILENAME).exists():
                texts = calibration_texts(args.squad_file)
                quantize_openvino(export, numpy_encoder(None, tokenizer, inputs, args.max_length)["batches"](texts, 16))
            session = OpenVinoSession(graph_path(export, "int8_bf16"), "int8_bf16", args.threads)
            encoder = numpy_encoder(
                lambda feed: session.run(["sentence_embedding"], feed)[0], tokenizer, inputs, args.max_length
            )
            encoder["note"] = f"OpenVINO NNCF INT8 (other ops: {precision_name(session.hint)}) on toprune's ONNX export"
            return encoder

        yield "openvino", True, "OpenVINO NNCF INT8 on toprune's ONNX export", openvino_int8


def measure(args, inputs, encoder, row) -> None:
    if not args.skip_accuracy:
        row.update(inputs.accuracy(inputs.encode_all(encoder["encode"])))
    if not args.skip_speed:
        for size in map(int, args.batch_sizes.split(",")):
            timing = time_passes(encoder["run"], encoder["batches"](inputs.timed, size), args.repeats)
            row[f"passages_per_s_b{size}"] = timing["passages_per_s"]
            row[f"seconds_b{size}"] = timing["seconds_all"]
    row["note"] = encoder.get("note", row["note"])


def st_rows(args, inputs, dense_folder) -> list[dict]:
    wanted = [b for b in args.backends.split(",") if b in ST_BACKENDS]
    if not wanted or not args.st_python:
        return []
    out = Path(args.workdir) / "st-worker"
    out.mkdir(parents=True, exist_ok=True)
    (out / "texts.json").write_text(json.dumps(inputs.texts()))
    spec = {
        "threads": args.threads,
        "out": str(out),
        "texts": str(out / "texts.json"),
        "model": str(dense_folder),
        "backends": wanted,
        "batch_sizes": [int(b) for b in args.batch_sizes.split(",")],
        "repeats": args.repeats,
        "accuracy": not args.skip_accuracy,
        "speed": not args.skip_speed,
    }
    (out / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": ""}
    worker = HERE / "embeddings_st_worker.py"
    done = subprocess.run([args.st_python, str(worker), str(out / "spec.json")], env=env)
    if done.returncode != 0 or not (out / "st_results.json").exists():
        return [
            {
                "method": "dense",
                "target": None,
                "backend": b,
                "int8": b.endswith("int8"),
                "model": "st",
                "error": f"the sentence-transformers worker failed (exit {done.returncode})",
            }
            for b in wanted
        ]
    results = json.loads((out / "st_results.json").read_text())
    rows = []
    for backend in wanted:
        got = results.get(backend, {})
        row = {
            "method": "dense",
            "target": None,
            "backend": backend,
            "int8": backend.endswith("int8"),
            "model": Path(dense_folder).name,
            "flops_reduction_unpadded": 1.0,
            "versions": results["versions"],
            "note": "sentence-transformers' own backend (optimum export"
            + (", avx512_vnni dynamic INT8)" if backend.endswith("int8") else ")"),
        }
        for name in ("error", "precision"):
            if name in got:
                row[name] = got[name]
        if "embeddings" in got:
            with np.load(got["embeddings"]) as arrays:
                row.update(inputs.accuracy(dict(arrays)))
        for size in spec["batch_sizes"]:
            if f"b{size}" in got:
                row[f"passages_per_s_b{size}"] = got[f"b{size}"]["passages_per_s"]
                row[f"seconds_b{size}"] = got[f"b{size}"]["seconds_all"]
        rows.append(row)
    return rows


def merge(path: Path, rows: list[dict], meta: dict, sizes: list[int]) -> None:
    """Rows merged into the file's by KEY (later values win), speed-ups recomputed, written at once."""
    old = json.loads(path.read_text()) if path.exists() else {}
    table = {tuple(r.get(k) for k in KEY): r for r in old.get("rows", [])}
    for row in rows:
        key = tuple(row.get(k) for k in KEY)
        table[key] = {**table.get(key, {}), **row}
    base = next((r for r in table.values() if r["method"] == "dense" and r["backend"] == "pytorch"), {})
    for row in table.values():
        for size in sizes:
            ours, ref = row.get(f"passages_per_s_b{size}"), base.get(f"passages_per_s_b{size}")
            if ours and ref:
                row[f"throughput_speedup_b{size}"] = ours / ref
    out = {**old, **meta, "rows": list(table.values())}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    import toprune
    from toprune.benchmark import environment
    from toprune.embedding import read_pooling
    from toprune.flops import EncoderDims
    from toprune.pretrained import resolve_model

    torch.set_num_threads(args.threads)
    dense_folder = resolve_model(args.dense)
    tokenizer = toprune.load_tokenizer(dense_folder)
    inputs = Inputs(args, tokenizer)
    dims = EncoderDims.from_config(toprune.load_model(dense_folder, "AutoModel").config)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    smoke = bool(args.max_passages or args.max_queries or args.max_pairs)
    meta = {
        "what": "corpus-encoding throughput (passages/s, model call only, tokenised before timing) and accuracy "
        "of all-MiniLM-L6-v2 dense vs token-pruned, per runtime; speed-ups vs dense fp32 PyTorch",
        "corpus": f"timed on {len(inputs.timed)} of the {len(inputs.paragraphs)} SQuAD v1.1 dev paragraphs, order "
        f"{args.order}, dynamic padding, "
        f"max_length {args.max_length}" + (" [SMOKE TEST: cut inputs]" if smoke else ""),
        "retrieval": f"{len(inputs.questions)} questions of the {inputs.heldout_articles} held-out articles "
        "against the paragraphs",
        "stsb_pairs": len(inputs.stsb_gold),
        "timing": f"median of {args.repeats} passes after a warm-up of 3 batches",
        "environment": {**environment(args.threads), "openvino": _version("openvino")},
    }
    if args.skip_speed:  # accuracy only: the file's description of how its speed rows were timed stays
        meta = {k: v for k, v in meta.items() if k not in ("corpus", "timing", "environment")}
    output = Path(args.output)
    if not args.skip_accuracy:
        dense_model = toprune.load_model(dense_folder, "AutoModel")
        encode = torch_encoder(dense_model, tokenizer, read_pooling(dense_folder), args.max_length)["encode"]
        inputs.dense_queries = encode(inputs.questions)
    for method, target, name, folder, tokens, load in model_specs(args, dims, inputs.all_lengths):
        model = load()
        pooling = read_pooling(folder, tokens or "restored")
        flops = None
        for backend, int8, note, make in backend_rows(args, model, tokenizer, pooling, name, folder, method == "dense"):
            row = {
                "method": method,
                "target": target,
                "backend": backend,
                "int8": int8,
                "model": name,
                "pooling_tokens": pooling.tokens,
                "note": note,
            }
            started = time.perf_counter()
            try:
                encoder = make()
                if flops is None:  # measured once per model on the PyTorch path: every runtime runs the same plan
                    flops = (
                        1.0
                        if method == "dense"
                        else torch_encoder(model, tokenizer, pooling, args.max_length)["flops"](inputs.paragraphs)
                    )
                row["flops_reduction_unpadded"] = flops
                measure(args, inputs, encoder, row)
            except Exception as exc:  # noqa: BLE001 - one runtime failing must not lose the other rows
                row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            row["seconds"] = round(time.perf_counter() - started, 1)
            print(json.dumps({k: v for k, v in row.items() if not k.startswith("seconds_")}), flush=True)
            merge(output, [row], meta, sizes)
    rows = st_rows(args, inputs, dense_folder)
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("seconds_")}), flush=True)
    merge(output, rows, meta, sizes)


def _version(name: str):
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
