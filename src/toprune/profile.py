"""``toprune profile``: measure one encoder on this machine and fit :class:`toprune.costmodel.LatencyCost`.

Backends: ``pytorch`` (eager, the pruned runtime's own code path) and ``onnxruntime`` (the graphs of
:func:`toprune.export.export_onnx`, which bake the plan into the graph: every plan timed is one export).

1. ``pytorch`` only: each part of layer 0 timed alone on random states (attention part, FFN part) at the serving
   batch size; it only splits the fitted constant between the layers and the fixed cost (whole-model timings cannot
   tell them apart), it does not change a prediction.
2. Calibration in the whole model: the dense model at several lengths and random plans at several lengths each
   (for batches of more than one example, half of them padded batches of mixed lengths, as dynamic padding serves
   them), fitted by :func:`toprune.costmodel.fit_latency_cost`: non-negative, relative-error, Huber-reweighted
   least squares on the cost model's own terms. The pruning overhead has a per-token term because a dropping layer
   computes its attention explicitly (the scores need the probabilities) instead of the fused kernel, and ranks and
   gathers: a constant per layer under-predicts long inputs and over-predicts short ones.
Timings are the median of ``repeats`` runs (more for fast models: ``MIN_TIMED_SECONDS`` at least) after warm-up
runs at the same shape (first runs at a new shape pay the allocator, and ONNX Runtime's shape-specific caches),
with ``threads`` intra-op threads: the median is the statistic the project's latency protocol reports
(``toprune.benchmark``), so the model predicts what is checked. Calibrations and checks time every configuration
once per round, over ``ROUNDS`` rounds, and keep the medians: a shared machine's speed drifts.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .adapters import block_parts
from .costmodel import (
    PROFILE_MAX_TOKENS,
    LatencyCost,
    fit_latency_cost,
    fit_polynomial,
    median_length,
    profile_key,
    profiled_length,
)
from .errors import ToPruneError
from .plan import PruningPlan, ScoringSpec, pruning_layers_or_default
from .scoring import self_attention

BACKENDS = ("pytorch", "onnxruntime")
# (random plans, lengths timed per plan): an ONNX Runtime plan costs an export, so fewer plans, more lengths each
CALIBRATION = {"pytorch": (12, 2), "onnxruntime": (4, 5)}
WARMUP = 2
# each timing runs at least this long: ten runs of a 4 ms batch-1 model are 40 ms, which one burst of another
# tenant's work on a shared VM moves by 10-15%; a quarter of a second of them is steady (big batches: unchanged)
MIN_TIMED_SECONDS = 0.25
ROUNDS = 3  # calibration and check timings are made in rounds (:func:`in_rounds`), their medians kept


def median_ms(fn: Callable[[], object], repeats: int, min_seconds: float | None = None) -> float:
    """Median ms of at least ``repeats`` runs, more until ``min_seconds`` (default ``MIN_TIMED_SECONDS``) have been
    timed, after warm-up runs."""
    min_seconds = MIN_TIMED_SECONDS if min_seconds is None else min_seconds
    for _ in range(WARMUP):
        fn()
    samples = []
    while len(samples) < repeats or sum(samples) < min_seconds * 1000.0:
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def token_grid(max_tokens: int) -> list[int]:
    grid = sorted({n for n in (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512) if n <= max_tokens})
    return grid if grid[-1] == max_tokens else grid + [max_tokens]


def make_batch(model, lengths: list[int], seed: int = 0) -> dict:
    """Random token ids right-padded to the longest of ``lengths`` (one example each), with the attention mask and,
    for models that take them, zero token type ids (what a tokenizer gives a single sentence)."""
    gen = torch.Generator().manual_seed(seed)
    n = max(lengths)
    ids = torch.randint(5, int(model.config.vocab_size), (len(lengths), n), generator=gen)
    mask = (torch.arange(n).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()
    batch = {"input_ids": ids * mask, "attention_mask": mask}
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        batch["token_type_ids"] = torch.zeros_like(ids)
    return batch


def uniform_batch(model, batch_size: int, n: int) -> dict:
    return make_batch(model, [n] * batch_size, seed=n)


def batch_counts(plan: PruningPlan | None, lengths, num_layers: int) -> list[int]:
    """Tokens each layer runs at for one dynamically padded batch: per layer, the longest survivor list of the
    batch (the pruned runtime re-pads to it), from each example's real length and the plan's keep counts."""
    longest = max(int(n) for n in lengths)
    if plan is None:
        return [longest] * num_layers
    per_example = [plan.token_counts(int(n)) for n in set(int(n) for n in lengths)]
    return [max(counts[layer] for counts in per_example) for layer in range(num_layers)]


def longest_input(model, max_tokens: int) -> int:
    """``max_tokens``, or less where the model's position embeddings end."""
    return min(max_tokens, int(getattr(model.config, "max_position_embeddings", max_tokens) or max_tokens))


def clip_length(n: int, max_tokens: int) -> int:
    """A timed length within [8, ``max_tokens``] (shorter inputs cost what 8 tokens do: per-operator cost)."""
    return min(max(int(n), min(8, max_tokens)), max_tokens)


def timed_length(model, lengths=None, max_tokens: int | None = None) -> int:
    """The longest input a profile times: the data's :func:`~toprune.costmodel.profiled_length` when ``lengths``
    are given (reaching past 128 where the data does: SQuAD windows), else ``max_tokens`` (default 128); never
    past the model's position embeddings."""
    if lengths:
        return profiled_length(lengths, longest_input(model, max([PROFILE_MAX_TOKENS, *lengths])))
    return longest_input(model, max_tokens or PROFILE_MAX_TOKENS)


def draw_length(generator: torch.Generator, max_tokens: int, lengths=None, batch_size: int = 1) -> int:
    """One timed input length: uniform in [8, ``max_tokens``], or, from the data's ``lengths``, the padded length
    of a random batch of ``batch_size`` of them (the longest: what dynamic padding runs at), clipped to that range,
    so that the fit weighs the lengths the model will run at as often as they occur."""
    if lengths is None:
        return int(torch.randint(min(8, max_tokens), max_tokens + 1, (), generator=generator))
    picks = torch.randint(len(lengths), (batch_size,), generator=generator)
    return clip_length(max(int(lengths[int(i)]) for i in picks), max_tokens)


def dense_lengths(max_tokens: int, lengths=None) -> list[int]:
    """The lengths the dense model is timed at: six of the token grid up to ``max_tokens``, or the data's
    10/30/50/70/90/99th percentiles."""
    if lengths is None:
        return [n for n in token_grid(max_tokens) if n >= 8][-6:] or [max_tokens]
    ranked = sorted(int(n) for n in lengths)
    picks = [ranked[min(len(ranked) - 1, int(q * len(ranked)))] for q in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99)]
    return [clip_length(n, max_tokens) for n in picks]


def training_lengths(model: str, task: str, data_dir) -> list[int]:
    """Token counts of a task's training examples as `prune` reads them (held-out selection slice excluded): what
    `toprune profile --task` times, so that the profile it caches is the one a latency-constrained run reuses."""
    from .pretrained import load_tokenizer
    from .prune_config import task_defaults
    from .train import prepare_data

    data = prepare_data(load_tokenizer(model), task, data_dir, task_defaults(task, None)[0])
    return [len(ids) for ids in data.train["input_ids"]]


def random_plan(num_layers: int, pruning_layers: list[int], generator: torch.Generator, scoring=None) -> PruningPlan:
    ratios = {layer: float(torch.empty(()).uniform_(0.2, 1.0, generator=generator)) for layer in pruning_layers}
    return PruningPlan.from_keep_ratios(num_layers, ratios, num_bins=20, scoring=scoring)


def floor_plan(num_layers: int, scoring=None, pruning_layers=None) -> PruningPlan:
    """Every token but CLS dropped at the first pruning layer (default: the first default one): the plan the
    reachability floor is judged on. Calibrated on too: random plans (keep 0.2-1 a layer) never come near it, and a
    fit without it mispredicted it enough to refuse a target that this plan reaches when timed (benchmarks/README.md
    section 8)."""
    first = min(pruning_layers_or_default(pruning_layers, num_layers))
    return PruningPlan.from_keep_ratios(num_layers, {first: 0.0}, scoring=scoring)


def key_scoring(cost: LatencyCost) -> ScoringSpec | None:
    """The scoring a profile was timed with (its key), for the checks that time more plans against it."""
    return ScoringSpec.from_dict(cost.key["scoring"]) if "scoring" in cost.key else None


def key_layers(cost: LatencyCost) -> list[int] | None:
    """The pruning layers a profile's plans were drawn on (its key; None: the model's default layers)."""
    return cost.key.get("pruning_layers")


class Timer:
    """Runs the model under a plan on one backend: ``with timer.runner(plan) as run: run(batch)``."""

    def __init__(self, model, backend: str, threads: int, workdir: str | Path | None = None) -> None:
        if backend not in BACKENDS:
            raise ToPruneError(f"--backend {backend}: latency profiles are measured for {', '.join(BACKENDS)}")
        from .runtime import remove_pruning

        remove_pruning(model)  # a pruned model folder profiles as its dense encoder: plans are put on by the timer
        self.model, self.backend, self.threads = model.eval(), backend, threads
        self.repeats = 10  # timed runs per calibration timing
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="toprune-profile-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)
        self._session: tuple[Path, Callable] | None = None  # the last graph's session (checks alternate plans: rebuilt)

    def close(self) -> None:
        self._session = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Timer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def runner(self, plan: PruningPlan | None):
        if self.backend == "onnxruntime":
            from .benchmark import ort_runner

            folder = self.export(plan)
            if self._session is None or self._session[0] != folder:
                self._session = None  # one session at a time (each holds the weights)
                self._session = (folder, ort_runner(folder, self.threads))
            yield self._session[1]
            return
        from .runtime import apply_pruning, remove_pruning

        if plan is not None:
            apply_pruning(self.model, plan)
        try:

            def run(batch: dict):
                with torch.inference_mode():
                    return self.model(**batch)

            yield run
        finally:
            if plan is not None:
                remove_pruning(self.model)

    def export(self, plan: PruningPlan | None) -> Path:
        """The served graph of the model under ``plan`` (None: the dense graph), exported once per plan into the
        work folder (several checks of one plan share it; the folder name hashes the plan and the config)."""
        from .export import export_onnx
        from .runtime import apply_pruning, remove_pruning
        from .serve import CONFIG_FILENAME

        bins = None if plan is None else plan.to_dict()["kept_bins"]
        key = json.dumps({"bins": bins, "config": self.model.config.to_dict()}, sort_keys=True, default=str)
        folder = self.workdir / f"graph-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        if (folder / CONFIG_FILENAME).is_file():
            return folder
        samples = [make_batch(self.model, [12, 7, 3], seed=1), make_batch(self.model, [5], seed=2)]
        if plan is not None:
            apply_pruning(self.model, plan)
        try:
            return export_onnx(self.model, None, folder, samples=samples)
        finally:
            if plan is not None:
                remove_pruning(self.model)


def time_batch(timer: Timer, plan: PruningPlan | None, lengths: list[int], repeats: int) -> float:
    batch = make_batch(timer.model, lengths, seed=max(lengths))
    with timer.runner(plan) as run:
        return median_ms(lambda: run(batch), repeats)


def batch_lengths(batch_size: int, n: int, mixed: bool, generator: torch.Generator) -> list[int]:
    """One example of ``n`` tokens and, for a mixed batch, the others between n/4 and n (dynamic padding)."""
    if not mixed or batch_size == 1:
        return [n] * batch_size
    low = max(2, n // 4)
    return [n] + [int(v) for v in torch.randint(low, n + 1, (batch_size - 1,), generator=generator)]


def layer_constants(model, batch_size: int, repeats: int) -> tuple[float, float]:
    """Per-layer constant costs (attention part, FFN part) of eager PyTorch: layer 0's parts timed alone on a few
    token counts, the intercepts of a line through them."""
    parts = block_parts(model)[0]
    d = int(model.config.hidden_size)
    grid = [n for n in (1, 2, 4, 8, 16, 32) if n <= int(model.config.max_position_embeddings)]
    attn, ffn = [], []
    with torch.inference_mode():
        for n in grid:
            hidden = torch.randn(batch_size, n, d)
            attn.append(
                median_ms(
                    lambda h=hidden: parts.attn_output(self_attention(parts, h, None, False, False)[0], h), repeats
                )
            )
            ffn.append(median_ms(lambda h=hidden: parts.ffn(h), repeats))
    return fit_polynomial(grid, attn, 1)[0], fit_polynomial(grid, ffn, 1)[0]


def calibration_configs(
    num_layers: int,
    batch_size: int,
    max_tokens: int,
    plans: int,
    lengths_per_plan: int,
    seed: int = 0,
    lengths=None,
    scoring=None,
    pruning_layers=None,
) -> list[tuple[PruningPlan | None, list[int]]]:
    """(plan, example lengths of one batch) of every calibration timing: the dense model at several lengths, then
    random plans and the :func:`floor_plan` on ``pruning_layers`` (default: the model's) at random lengths, drawn
    from the data's ``lengths`` when given (deterministic in ``seed``: the exports they need can be made ahead)."""
    generator = torch.Generator().manual_seed(seed + 1000)  # lengths; the plans do not depend on the batch size
    dense = dense_lengths(max_tokens, lengths)
    configs = [(None, batch_lengths(batch_size, n, i % 3 == 2, generator)) for i, n in enumerate(dense)]
    plans_timed = check_plans(num_layers, plans, seed, scoring, pruning_layers)
    for plan in [*plans_timed, floor_plan(num_layers, scoring, pruning_layers)]:
        for j in range(lengths_per_plan):
            n = draw_length(generator, max_tokens, lengths, batch_size)
            configs.append((plan, batch_lengths(batch_size, n, j % 2 == 1, generator)))
    return configs


def in_rounds(timings: list[Callable[[], float]], rounds: int, desc: str, progress: bool = True) -> list[float]:
    """The median of each of ``timings`` (calls returning ms) made once per round, all of them in order, ``rounds``
    times: on a machine whose speed drifts (one AMD EPYC VM check: 30% within two minutes) a slow spell then
    touches every timing alike instead of the ones made during it."""
    samples = [[] for _ in timings]
    with tqdm(total=rounds * len(timings), desc=desc, disable=not progress) as bar:
        for _ in range(rounds):
            for timing, out in zip(timings, samples):
                out.append(timing())
                bar.update()
    return [statistics.median(s) for s in samples]


def plan_drops(plan: PruningPlan | None, num_layers: int) -> list[float]:
    """The layers that pay the pruning overhead under ``plan`` (none for the dense model)."""
    return [0.0] * num_layers if plan is None else plan.drop_flags()


def calibrate(timer: Timer, configs, progress: bool = True, rounds: int = ROUNDS) -> tuple[list, list, list[float]]:
    """Whole-model timings of ``configs``: (tokens each layer ran at, the layers that paid the pruning overhead,
    median ms over the rounds)."""
    num_layers = int(timer.model.config.num_hidden_layers)
    counts = [batch_counts(plan, lengths, num_layers) for plan, lengths in configs]
    drops = [plan_drops(plan, num_layers) for plan, _ in configs]
    timings = [lambda p=plan, n=lengths: time_batch(timer, p, n, timer.repeats) for plan, lengths in configs]
    return counts, drops, in_rounds(timings, rounds, f"calibrating {timer.backend} b{len(configs[0][1])}", progress)


def profile(
    model,
    backend: str = "pytorch",
    batch_size: int = 1,
    threads: int = 0,
    max_tokens: int = PROFILE_MAX_TOKENS,
    repeats: int = 10,
    plans: int | None = None,
    lengths_per_plan: int | None = None,
    workdir: str | Path | None = None,
    progress: bool = True,
    lengths=None,
    scoring: ScoringSpec | None = None,
    pruning_layers: list[int] | None = None,
) -> LatencyCost:
    """The fitted cost model of ``model`` on this machine for this backend, batch size and thread count, timed on
    inputs up to ``max_tokens``: uniform lengths, or drawn from the data's ``lengths`` (its key then records their
    median), with plans that score tokens as ``scoring`` says (default: attention received) and drop tokens on
    ``pruning_layers`` (default: the model's default layers; a run on other layers has another floor plan).
    ``workdir`` keeps the ONNX Runtime exports (default: a temporary folder)."""
    if backend not in BACKENDS:
        raise ToPruneError(f"--backend {backend}: latency profiles are measured for {', '.join(BACKENDS)} so far")
    before = torch.get_num_threads()
    threads = threads or before
    default_plans, default_lengths = CALIBRATION[backend]
    max_tokens = longest_input(model, max_tokens)
    try:
        torch.set_num_threads(threads)
        model = model.eval()
        with Timer(model, backend, threads, workdir) as timer:
            constants = layer_constants(model, batch_size, repeats) if backend == "pytorch" else (0.0, 0.0)
            timer.repeats = repeats
            configs = calibration_configs(
                int(model.config.num_hidden_layers),
                batch_size,
                max_tokens,
                plans or default_plans,
                lengths_per_plan or default_lengths,
                lengths=lengths,
                scoring=scoring,
                pruning_layers=pruning_layers,
            )
            counts, drops, times = calibrate(timer, configs, progress)
        key = profile_key(
            model, backend, batch_size, threads, max_tokens, median_length(lengths), scoring, pruning_layers
        )
        return fit_latency_cost(counts, times, key, constants, drops)
    finally:
        torch.set_num_threads(before)  # the caller (e.g. a training run) keeps its own thread count


def check_plans(num_layers: int, plans: int, seed: int = 1, scoring=None, pruning_layers=None) -> list[PruningPlan]:
    """``plans`` random plans drawn with ``seed`` on ``pruning_layers`` (default: the model's): the calibration's
    (seed 0) or a check's (seed 1, other plans); the uniform and the real-batch checks time the same ones, so ONNX
    Runtime exports each once."""
    generator = torch.Generator().manual_seed(seed)
    layers = pruning_layers_or_default(pruning_layers, num_layers)  # as the profile key has them
    return [random_plan(num_layers, layers, generator, scoring) for _ in range(plans)]
