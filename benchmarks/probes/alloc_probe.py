"""Probe for the GELU/copy puzzle of results/profile_mrpc.md: time dense and pruned MRPC at b32 (1 thread) under the
current malloc settings. Compare runs with and without MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000
(fresh-page faults for the many new shapes of the pruned model?). Only meaningful on an idle machine. Repo root:
    python benchmarks/probes/alloc_probe.py default [DENSE PRUNED]
    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 python benchmarks/probes/alloc_probe.py no-mmap
DENSE/PRUNED default to runs/mrpc-teacher and runs/study/mrpc-top/best; any dense + pruned pair works (the inputs
are MRPC dev pairs whatever the task), e.g. runs/cola-teacher and a fixed plan saved with toprune.save_pruned.
"""

import torch, time, sys
import toprune
from toprune.benchmark import make_batches
from toprune.data import load_glue_split

torch.set_num_threads(1)
tok = toprune.load_tokenizer(sys.argv[2] if len(sys.argv) >= 4 else "runs/mrpc-teacher")
ds = load_glue_split(
    str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data" / "glue"), "mrpc", "dev"
).select(range(128))
batches = make_batches(tok, ds["text_a"], ds["text_b"], 32)
res = {}
paths = sys.argv[2:4] if len(sys.argv) >= 4 else ["runs/mrpc-teacher", "runs/study/mrpc-top/best"]
models = {n: toprune.load_model(p).eval() for n, p in zip(("dense", "pruned"), paths)}
with torch.inference_mode():
    for n, m in models.items():
        for b in batches:
            m(**b)
    for rep in range(3):
        for n, m in models.items():
            t = time.perf_counter()
            for b in batches:
                m(**b)
            res.setdefault(n, []).append((time.perf_counter() - t) * 1000 / len(batches))
print(
    sys.argv[1],
    {n: round(min(v), 1) for n, v in res.items()},
    "ratio",
    round(min(res["dense"]) / min(res["pruned"]), 3),
)
