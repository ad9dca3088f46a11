"""``toprune profile``: measure one encoder on this machine and fit :class:`toprune.costmodel.LatencyCost`.

Backend ``pytorch`` (eager, the pruned runtime's own code path):
1. each part of layer 0, timed alone on random states of n tokens at the serving batch size: the attention part
   (projections, SDPA, output projection + norm) over a grid of n, the FFN part (+ norm) likewise; fitted a0+a1 n+a2 n^2
   and f0+f1 n;
2. calibration in the whole model: the dense model at four lengths and random plans on uniform inputs, fitted by
   non-negative least squares as s * (the parts' prediction) + a fixed cost (embeddings, head, the call) + an overhead
   per layer whose tokens drop (explicit attention for the scores, ranking, gather, restore).
Timings are the best of ``repeats`` runs after a warm-up, with ``threads`` intra-op threads: on a shared machine
the fastest run is the one least disturbed by other work (timeit's advice), and a cost model wants the machine's
own cost, not the neighbours'.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import nnls
from tqdm.auto import tqdm

from .adapters import block_parts
from .costmodel import LatencyCost, fit_polynomial, profile_key
from .errors import ToPruneError
from .plan import PruningPlan, default_pruning_layers
from .scoring import self_attention

BACKENDS = ("pytorch",)


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return min(samples)


def token_grid(max_tokens: int) -> list[int]:
    grid = sorted({n for n in (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512) if n <= max_tokens})
    return grid if grid[-1] == max_tokens else grid + [max_tokens]


def uniform_batch(model, batch_size: int, n: int) -> dict:
    vocab = int(model.config.vocab_size)
    ids = torch.randint(5, vocab, (batch_size, n), generator=torch.Generator().manual_seed(n))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def time_plan(model, plan: PruningPlan | None, batch_size: int, n: int, repeats: int) -> float:
    """Best-of-``repeats`` ms of the model on ``batch_size`` uniform inputs of ``n`` tokens, under ``plan`` (None:
    dense); the plan is removed afterwards whatever happens."""
    from .runtime import apply_pruning, remove_pruning

    if plan is not None:
        apply_pruning(model, plan)
    try:
        with torch.inference_mode():
            return best_ms(lambda: model(**uniform_batch(model, batch_size, n)), repeats)
    finally:
        if plan is not None:
            remove_pruning(model)


def random_plan(num_layers: int, pruning_layers: list[int], generator: torch.Generator) -> PruningPlan:
    ratios = {layer: float(torch.empty(()).uniform_(0.2, 1.0, generator=generator)) for layer in pruning_layers}
    return PruningPlan.from_keep_ratios(num_layers, ratios, num_bins=20)


def profile_pytorch(model, batch_size: int, threads: int, max_tokens: int = 128, repeats: int = 10,
                    plans: int = 8, progress: bool = True) -> LatencyCost:

    if threads:
        torch.set_num_threads(threads)
    model = model.eval()
    parts = block_parts(model)[0]
    d = int(model.config.hidden_size)
    grid = token_grid(max_tokens)
    attn, ffn = [], []
    with torch.inference_mode():
        for n in tqdm(grid, desc=f"profiling layer parts b{batch_size}", disable=not progress):
            hidden = torch.randn(batch_size, n, d)
            attn.append(best_ms(lambda h=hidden: parts.attn_output(self_attention(parts, h, None, False, False)[0],
                                                                     h), repeats))
            ffn.append(best_ms(lambda h=hidden: parts.ffn(h), repeats))
        layers = LatencyCost(int(model.config.num_hidden_layers), fit_polynomial(grid, attn, 2),
                             fit_polynomial(grid, ffn, 1), 0.0, key=profile_key(model, "pytorch", batch_size, threads))
        # calibration in the whole model: measured ~ s * (layers' parts) + fixed + overhead * (layers that drop),
        # on the dense model at four lengths and on random plans (parts timed alone miss in-model effects: caches,
        # the runtime's own ops), solved by non-negative least squares
        lengths = [n for n in grid if n >= 8][-4:]
        generator, rows, times = torch.Generator().manual_seed(0), [], []
        configs = [(None, n) for n in lengths] + [
            (random_plan(layers.num_layers, default_pruning_layers(layers.num_layers), generator),
             int(torch.randint(8, max_tokens + 1, (), generator=generator))) for _ in range(plans)]
        for plan, n in tqdm(configs, desc="calibrating in the whole model", disable=not progress):
            counts = plan.token_counts(n) if plan is not None else [n] * layers.num_layers
            times.append(time_plan(model, plan, batch_size, n, repeats))
            drops = sum(1 for a, b in zip(counts, counts[1:]) if b < a)
            rows.append([layers.predict_ms(counts), 1.0, float(drops)])
    (scale, fixed, overhead), _ = nnls(np.asarray(rows), np.asarray(times))
    return LatencyCost(layers.num_layers, tuple(scale * c for c in layers.attention),
                       tuple(scale * c for c in layers.ffn), float(fixed), float(overhead), layers.key)


def profile(model, backend: str = "pytorch", batch_size: int = 1, threads: int = 0, **kwargs) -> LatencyCost:
    if backend not in BACKENDS:
        raise ToPruneError(f"--backend {backend}: latency profiles are measured for {', '.join(BACKENDS)} so far")
    before = torch.get_num_threads()
    try:
        return profile_pytorch(model, batch_size, threads or before, **kwargs)
    finally:
        torch.set_num_threads(before)  # the caller (e.g. a training run) keeps its own thread count


def check_predictions(model, cost: LatencyCost, plans: int, max_tokens: int, repeats: int = 10,
                      seed: int = 1) -> dict:
    """Predicted vs measured latency of random plans on uniform inputs of random lengths (the profile's own
    batch size): the cost model's error, as a fraction of the measured time."""

    batch_size = int(cost.key.get("batch_size", 1))
    generator = torch.Generator().manual_seed(seed)
    rows = []
    pruning_layers = default_pruning_layers(cost.num_layers)
    before = torch.get_num_threads()
    torch.set_num_threads(int(cost.key.get("threads", before)))
    try:
        for _ in tqdm(range(plans), desc="checking predictions"):
            plan = random_plan(cost.num_layers, pruning_layers, generator)
            n = int(torch.randint(8, max_tokens + 1, (), generator=generator))
            measured = time_plan(model, plan, batch_size, n, repeats)
            predicted = cost.predict_ms(plan.token_counts(n))
            rows.append({"tokens": n, "keep_ratios": [round(plan.keep_ratio(i), 3) for i in range(cost.num_layers)],
                         "predicted_ms": predicted, "measured_ms": measured})
    finally:
        torch.set_num_threads(before)
    errors = [abs(r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"] for r in rows]
    return {"median_abs_error": statistics.median(errors), "plans": rows}
