"""What onnxruntime's transformer fusions (`export_onnx(fuse=True)`, the default) buy in ONNX Runtime: each model is
exported plain and fused, both checked for parity on export, then timed with the bench protocol on real inputs
beside dense HF eager. Usage (repo root):
    python benchmarks/probes/ort_fused.py squad runs/squad-teacher runs/squad-static-q5/best  # 384-token windows
    python benchmarks/probes/ort_fused.py mrpc runs/demo/mrpc/teacher runs/demo/mrpc/top/best
"""

import json, sys, tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from toprune import load_model, load_tokenizer
from toprune.benchmark import make_batches, ort_runner, time_batches, torch_runner
from toprune.export import CONFIG_FILENAME, export_onnx

THREADS, REPEATS, N = 2, 3, 128
torch.set_num_threads(THREADS)
task, folders = sys.argv[1], sys.argv[2:]
data = Path(__file__).resolve().parents[3] / "shared" / "data"
head = "AutoModelForQuestionAnswering" if task == "squad" else "AutoModelForSequenceClassification"
tok = load_tokenizer(folders[0])
if task == "squad":
    articles = json.loads((data / "squad" / "dev-v1.1.json").read_text())["data"][38:]
    pairs = [(q["question"], p["context"]) for a in articles for p in a["paragraphs"] for q in p["qas"]][:N]
    max_length = 384
else:
    import csv

    with open(data / "glue" / "MRPC" / "dev.tsv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1 : N + 1]
    pairs, max_length = [(r[3], r[4]) for r in rows], 128
a, b = zip(*pairs)
work = Path(tempfile.mkdtemp())
runners, fused_ops = {}, {}
for i, folder in enumerate(folders):
    name = "dense" if i == 0 else "pruned"
    model = load_model(folder, head)
    if i == 0:
        runners["dense HF eager (SDPA)"] = torch_runner(model)
    for fuse in (False, True):
        out = work / f"{name}-{fuse}"
        export_onnx(model, tok, out, fuse=fuse)
        fused_ops[f"{name} fused={fuse}"] = json.loads((out / CONFIG_FILENAME).read_text())["fused_ops"]
        runners[f"{name} ORT{' fused' if fuse else ''}"] = ort_runner(out, THREADS)
print(json.dumps(fused_ops), flush=True)
result = {
    "task": task,
    "models": folders,
    "examples": N,
    "repeats": REPEATS,
    "threads": THREADS,
    "fused_ops": fused_ops,
    "ms": {},
}
for bs in (1, 32):
    batches = make_batches(tok, a, b, bs, max_length)
    for name, run in runners.items():
        result["ms"].setdefault(name, {})[f"b{bs}"] = round(time_batches(run, batches, name, REPEATS).ms_median, 2)
    print(json.dumps(result["ms"]), flush=True)
print(json.dumps(result))
