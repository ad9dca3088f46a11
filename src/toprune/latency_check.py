"""Is the latency cost model right on real inputs? Predicted vs measured whole-model latency on real task batches.

``check_predictions`` times random plans on uniform random inputs; a served model sees
dynamically padded batches of real text, where each layer runs at the longest survivor list of its batch and the
padded (masked) path of the runtime is taken. Here the batches are the first examples of a task's dev set, grouped
and padded as ``toprune bench`` does (``toprune.benchmark.make_batches``), timed with the project's latency protocol
(``toprune.benchmark.time_batches``: warm-up pass, timed pass, ms per batch; plans timed in rounds, the median
over rounds reported); the prediction of each batch comes from its own lengths and the plan's keep counts
(:func:`toprune.profile.batch_counts`), averaged the same way.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from .costmodel import LatencyCost
from .errors import ToPruneError
from .plan import PruningPlan
from .profile import (
    ROUNDS,
    Timer,
    batch_counts,
    check_plans,
    draw_length,
    in_rounds,
    key_layers,
    key_scoring,
    longest_input,
    median_ms,
    plan_drops,
    time_batch,
)

EXAMPLES = 256  # dev examples checked: enough batches at b32 (8) without making b1 passes long


def relative_errors(rows: list[dict]) -> list[float]:
    return [abs(r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"] for r in rows]


def check_predictions(
    model,
    cost: LatencyCost,
    plans: int,
    max_tokens: int,
    repeats: int = 10,
    seed: int = 1,
    workdir: str | Path | None = None,
    progress: bool = True,
    lengths=None,
    rounds: int = ROUNDS,
) -> dict:
    """Predicted vs measured latency of :func:`check_plans` on uniform inputs of random lengths (uniform in
    [8, ``max_tokens``], or drawn from the data's ``lengths``), at the profile's own backend, batch size and
    threads: the cost model's error, a fraction of the measured time. Every plan is timed once per round and its
    median over the ``rounds`` kept: a machine whose speed drifts during the check slows every plan alike."""
    batch_size = int(cost.key.get("batch_size", 1))
    max_tokens = longest_input(model, max_tokens)
    generator = torch.Generator().manual_seed(seed + 1)
    todo = [
        (plan, draw_length(generator, max_tokens, lengths, batch_size))
        for plan in check_plans(cost.num_layers, plans, seed, key_scoring(cost), key_layers(cost))
    ]
    before = torch.get_num_threads()
    threads = int(cost.key.get("threads", before))
    torch.set_num_threads(threads)
    try:
        with Timer(model, cost.key.get("backend", "pytorch"), threads, workdir) as timer:
            timings = [lambda p=plan, n=n: time_batch(timer, p, [n] * batch_size, repeats) for plan, n in todo]
            measured = in_rounds(timings, rounds, "checking predictions", progress)
    finally:
        torch.set_num_threads(before)
    rows = [
        {
            "tokens": n,
            "keep_ratios": [round(plan.keep_ratio(i), 3) for i in range(cost.num_layers)],
            "predicted_ms": cost.predict_ms(plan.token_counts(n), plan.drop_flags()),
            "measured_ms": ms,
        }
        for (plan, n), ms in zip(todo, measured)
    ]
    return {"median_abs_error": statistics.median(relative_errors(rows)) if rows else None, "plans": rows}


def task_batches(
    tokenizer, task: str, data_dir, batch_size: int, examples: int = EXAMPLES, max_length: int = 128
) -> list[dict]:
    """The first ``examples`` dev examples of a GLUE task in batches of ``batch_size``, dynamically padded."""
    from .benchmark import make_batches
    from .data import load_glue_split

    dev = load_glue_split(data_dir, task, "dev")
    dev = dev.select(range(min(examples, len(dev))))
    texts_b = dev["text_b"] if "text_b" in dev.column_names else None
    return make_batches(tokenizer, dev["text_a"], texts_b, batch_size, max_length)


def batch_lengths_of(batch: dict) -> list[int]:
    return [int(n) for n in batch["attention_mask"].sum(dim=1)]


def predict_batches(cost: LatencyCost, plan: PruningPlan | None, batches: list[dict]) -> float:
    """Predicted ms per batch over ``batches``: each batch predicted from its own lengths, then averaged (what the
    latency protocol reports: a pass over all batches divided by their number)."""
    if not batches:
        raise ToPruneError("no batches to predict")
    drops = plan_drops(plan, cost.num_layers)
    total = sum(cost.predict_ms(batch_counts(plan, batch_lengths_of(b), cost.num_layers), drops) for b in batches)
    return total / len(batches)


def check_real_batches(
    model,
    cost: LatencyCost,
    batches: list[dict],
    plans: int = 12,
    learned: dict[str, PruningPlan] | None = None,
    repeats: int = 5,
    seed: int = 1,
    workdir: str | Path | None = None,
    progress: bool = True,
    per_batch: bool = False,
) -> dict:
    """Predicted vs measured ms per batch of the dense model, ``plans`` random plans (``seed``) and the ``learned``
    plans ({name: plan}) on ``batches``, on the profile's backend and threads. The batches should have the
    profile's batch size (the last one may be shorter; it is predicted as it is). Timed in ``repeats`` rounds
    (:func:`toprune.profile.in_rounds`), each timing every plan once (a warm-up pass, a timed pass); a plan's time
    is its median over the rounds, so a machine whose speed drifts during the check slows every plan alike (plan
    after plan, one AMD EPYC VM check timed the dense model at 5.3 ms first and near-dense learned plans at 3.1-3.3
    ms last). ``per_batch``: also the mean of each batch's own median (``measured_ms_per_batch``, after the
    rounds): on a loaded machine a pass's mean carries every preempted call, a per-batch median much less, which
    tells a wrong model from a busy machine."""
    from .benchmark import time_batches

    profiled = int(cost.key.get("batch_size", 1))
    if batches and int(batches[0]["input_ids"].shape[0]) != profiled:
        raise ToPruneError(
            f"batches of {batches[0]['input_ids'].shape[0]} checked against a profile measured at batch size {profiled}"
        )
    todo = [("dense", "dense", None)]
    todo += [
        (f"random {i}", "random", plan)
        for i, plan in enumerate(check_plans(cost.num_layers, plans, seed, key_scoring(cost), key_layers(cost)))
    ]
    todo += [(name, "learned", plan) for name, plan in (learned or {}).items()]
    before = torch.get_num_threads()
    threads = int(cost.key.get("threads", before))
    torch.set_num_threads(threads)

    def timed(timer: Timer, name: str, plan) -> float:  # one warm-up pass, one timed pass: ms per batch
        with timer.runner(plan) as run:
            return time_batches(run, batches, name, 1).ms_median

    def timed_per_batch(timer: Timer, plan) -> float:  # ``repeats`` runs of each batch, no minimum time (256 at b1)
        with timer.runner(plan) as run:
            return statistics.mean(median_ms(lambda b=b: run(b), repeats, min_seconds=0.0) for b in batches)

    try:
        with Timer(model, cost.key.get("backend", "pytorch"), threads, workdir) as timer:
            timings = [lambda n=name, p=plan: timed(timer, n, p) for name, _, plan in todo]
            measured = in_rounds(timings, repeats, "checking on real batches", progress)
            robust = [timed_per_batch(timer, plan) for _, _, plan in todo] if per_batch else None
    finally:
        torch.set_num_threads(before)
    rows = []
    for j, (name, kind, plan) in enumerate(todo):  # by position: a learned plan may be named "dense"
        keep = [1.0] * cost.num_layers if plan is None else [plan.keep_ratio(i) for i in range(cost.num_layers)]
        rows.append(
            {
                "name": name,
                "kind": kind,
                "keep_ratios": [round(r, 3) for r in keep],
                "predicted_ms": predict_batches(cost, plan, batches),
                "measured_ms": measured[j],
                **({"measured_ms_per_batch": robust[j]} if per_batch else {}),
            }
        )

    def median_error(kind: str):
        chosen = [r for r in rows if r["kind"] == kind]
        return statistics.median(relative_errors(chosen)) if chosen else None

    out = {
        "median_abs_error": median_error("random"),
        "median_abs_error_learned": median_error("learned"),
        "speedup_median_abs_error": median_speedup_error(rows, "random"),
        "speedup_median_abs_error_learned": median_speedup_error(rows, "learned"),
        "dense_error": relative_errors(rows[:1])[0],
        "batches": len(batches),
        "examples": sum(int(b["input_ids"].shape[0]) for b in batches),
        "plans": rows,
    }
    if per_batch:
        robust = [{**r, "measured_ms": r["measured_ms_per_batch"]} for r in rows if r["kind"] == "random"]
        out["median_abs_error_per_batch"] = statistics.median(relative_errors(robust)) if robust else None
    return out


def median_speedup_error(rows: list[dict], kind: str) -> float | None:
    """Median |predicted - measured| / measured speed-up over the dense model (``rows[0]``, timed in the same
    rounds) of the rows of ``kind``: what the constraint uses is a speed-up, and a drift of the machine's speed
    between the profile and the check moves every ms but not the ratios of timings made side by side."""
    dense, chosen = rows[0], [r for r in rows if r["kind"] == kind]
    measured = [dense["measured_ms"] / r["measured_ms"] for r in chosen]
    errors = [abs(dense["predicted_ms"] / r["predicted_ms"] - m) / m for r, m in zip(chosen, measured)]
    return statistics.median(errors) if errors else None


def tokenised_batches(dataset, tokenizer, batch_size: int, examples: int = EXAMPLES) -> list[dict]:
    """The first ``examples`` of a tokenised split (e.g. the held-out selection slice) in batches of ``batch_size``,
    each padded to its own longest example, as served (the training loader's collation, without the labels)."""
    from .train import make_loader

    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
    rows = dataset.select(range(min(examples, len(dataset)))).select_columns(columns)
    return list(make_loader(rows, tokenizer, batch_size, shuffle=False))


def measure_plan(dense_model, cost: LatencyCost, plan: PruningPlan, dataset, tokenizer, examples: int = EXAMPLES):
    """Predicted vs measured speed-up of ``plan`` over the dense model on the first ``examples`` of ``dataset``, in
    the profile's backend, batch size and threads (the dense model is copied: plans are put on the copy). The
    timing is as quiet as the machine is: the returned ``line`` says so."""
    import copy

    batch_size = int(cost.key.get("batch_size", 1))
    if min(examples, len(dataset)) < batch_size:  # nothing to time at the profile's batch size: said, not fatal
        return {"line": f"latency check skipped: {min(examples, len(dataset))} selection examples, fewer than one "
                        f"batch of {batch_size} (--latency-check-examples, or a larger selection slice)"}  # fmt: skip
    batches = tokenised_batches(dataset, tokenizer, batch_size, examples)
    dense = copy.deepcopy(dense_model).to("cpu")  # the profile timed the CPU
    check = check_real_batches(dense, cost, batches, plans=0, learned={"kept": plan}, repeats=3, progress=False)
    dense, kept = check["plans"]
    out = {
        "examples": check["examples"],
        "backend": cost.key.get("backend"),
        "batch_size": cost.key.get("batch_size"),
        "threads": cost.key.get("threads"),
        "predicted_ms": {"dense": dense["predicted_ms"], "kept": kept["predicted_ms"]},
        "measured_ms": {"dense": dense["measured_ms"], "kept": kept["measured_ms"]},
        "predicted_speedup": dense["predicted_ms"] / kept["predicted_ms"],
        "measured_speedup": dense["measured_ms"] / kept["measured_ms"],
    }
    out["line"] = (
        f"latency check on {out['examples']} selection examples ({out['backend']}, batch {out['batch_size']}, "
        f"{out['threads']} threads): predicted {out['predicted_speedup']:.2f}x, measured "
        f"{out['measured_speedup']:.2f}x (timed now, beside whatever else runs on this machine)"
    )
    return out
