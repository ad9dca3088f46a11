"""Dense ONNX Runtime competitor: opset 18 + fusions vs opset 23 (one ONNX Attention node per layer) with and
without the fusions, beside dense eager, on real inputs (64-128 examples, 3 passes, 2 threads). Usage (repo root):
    python benchmarks/probes/ort_opset.py squad runs/squad-teacher
    python benchmarks/probes/ort_opset.py mrpc runs/demo/mrpc/teacher
"""

import sys, json, tempfile, torch
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
import toprune
from toprune.export import export_onnx, CONFIG_FILENAME
from toprune.benchmark import make_batches, ort_runner, time_batches, torch_runner

torch.set_num_threads(2)
task, folder = sys.argv[1], sys.argv[2]
head = "AutoModelForQuestionAnswering" if task == "squad" else "AutoModelForSequenceClassification"
m, tok = toprune.load_model(folder, head), toprune.load_tokenizer(folder)
data = Path(__file__).resolve().parents[3] / "shared" / "data"
if task == "squad":
    arts = json.loads((data / "squad" / "dev-v1.1.json").read_text())["data"][38:]
    pairs = [(q["question"], p["context"]) for a in arts for p in a["paragraphs"] for q in p["qas"]][:64]
    L = 384
else:
    import csv

    rows = list(csv.reader(open(data / "glue/MRPC/dev.tsv"), delimiter="\t", quoting=csv.QUOTE_NONE))[1:129]
    pairs, L = [(r[3], r[4]) for r in rows], 128
a, b = zip(*pairs)
runners = {"eager": torch_runner(m)}
for opset, fuse in ((18, True), (23, False), (23, True)):
    d = Path(tempfile.mkdtemp())
    export_onnx(m, tok, d, opset=opset, fuse=fuse)
    print(opset, fuse, json.loads((d / CONFIG_FILENAME).read_text())["fused_ops"], flush=True)
    runners[f"ort{opset}{'f' if fuse else ''}"] = ort_runner(d, 2)
for bs in (1, 32):
    batches = make_batches(tok, a, b, bs, L)
    print(bs, {k: round(time_batches(r, batches, k, 3).ms_median, 1) for k, r in runners.items()}, flush=True)
