"""What the ToP constraint counts: FLOPs (the paper) or measured latency on this machine [ours].

Both are cost models of :func:`toprune.flops.encoder_cost` (``num_layers``, ``layer_cost``, ``fixed_cost``): the
expected cost of the soft plan in the Lagrangian, plan fitting, the static schedule and the reachability check use
whichever the run chose, through the same code. FLOPs are always measured and reported as well, both conventions.

A constraint is one class (:class:`Constraint`): the cost model it counts and whether an evaluated plan meets the
target. ``CONSTRAINTS`` maps the user-facing names (``--constraint``) to them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

from .costmodel import LatencyCost, median_length, profile_key


LENGTH_KEYS = ("max_tokens", "median_tokens")  # where a profile's timed lengths are recorded in its key


def profile_cache_dir() -> Path:
    return Path(os.environ.get("TOPRUNE_CACHE", Path.home() / ".cache" / "toprune")) / "profiles"


def cached_profile_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return profile_cache_dir() / f"{digest}.json"


def latency_cost(
    model,
    backend: str,
    batch_size: int,
    threads: int,
    profile_path=None,
    log=print,
    lengths=None,
    scoring=None,
    pruning_layers=None,
) -> LatencyCost:
    """The model's latency profile for this backend, batch size and thread count, timed on inputs up to the
    :func:`~toprune.costmodel.profiled_length` of ``lengths`` (the examples it will predict for; None: 128 tokens),
    with plans that score tokens as ``scoring`` (a :class:`~toprune.plan.ScoringSpec`; default attention) says and
    drop them on ``pruning_layers`` (default: the model's):
    the given file (refused if it was measured for another setting; its length range is the user's call), else the
    cache of this machine, else measured now and cached."""
    import torch

    from .profile import profile, timed_length

    max_tokens = timed_length(model, lengths)
    key = profile_key(model, backend, batch_size, threads, max_tokens, median_length(lengths), scoring, pruning_layers)
    if profile_path:  # the user's file: any range of lengths, but the run's pruning layers (None: the default ones)
        expect = {k: v for k, v in key.items() if k not in LENGTH_KEYS} | {"pruning_layers": key.get("pruning_layers")}
        return LatencyCost.load(profile_path, expect=expect)
    cached = cached_profile_path(key)
    if cached.is_file():
        log(f"latency profile: reusing {cached}")
        return LatencyCost.load(cached, expect=key)
    exports = ", one ONNX export per plan timed" if backend == "onnxruntime" else ""
    drawn = " drawn from the training data's lengths" if lengths is not None else ""
    log(
        f"latency profile: measuring {backend}, batch {batch_size}, {threads} threads, inputs up to {max_tokens} "
        f"tokens{drawn} (a few minutes{exports})"
    )
    # timed on a CPU copy (a run training on a GPU serves its CPU users; the profile's tensors are CPU tensors), and
    # with the caller's random state kept: a run that measures its profile trains like one that reuses it
    with torch.random.fork_rng(devices=[]):
        cost = profile(on_cpu(model), backend, batch_size, threads, max_tokens=max_tokens, lengths=lengths,
                       scoring=scoring, pruning_layers=pruning_layers)  # fmt: skip
    cost.save(cached)
    return cost


def on_cpu(model):
    """``model`` itself when it is on the CPU, else a CPU copy (the caller's model stays where it is)."""
    import copy

    if all(p.device.type == "cpu" for p in model.parameters()):
        return model
    return copy.deepcopy(model).to("cpu")


def constraint_cost(constraint, model, cfg, log=print, lengths=None):
    """``constraint.cost`` with the training lengths when it takes them: a user's constraint written before
    ``cost`` gained ``lengths`` (its signature ``cost(self, model, cfg, log=print)``) keeps working."""
    params = inspect.signature(constraint.cost).parameters
    takes = "lengths" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return constraint.cost(model, cfg, log, lengths=lengths) if takes else constraint.cost(model, cfg, log)


class Constraint:
    """What ``--target`` counts. ``cost`` is a cost model of :func:`toprune.flops.encoder_cost` (the Lagrangian, plan
    fitting, static schedules and the reachability check all use it); ``judge`` adds to an evaluation of ``plan``
    whether it meets the target (and any number of its own)."""

    name = ""

    def cost(self, model, cfg, log=print, lengths=None):
        """``lengths``: the training examples' token counts (what a measured cost model is fitted for)."""
        raise NotImplementedError

    def judge(self, result: dict, plan, run) -> None:
        raise NotImplementedError

    def check_kept(self, run) -> dict | None:
        """After training: the kept plan checked by measurement (None: this constraint predicts nothing to time)."""
        return None


class FlopsConstraint(Constraint):
    """The paper's: the FLOPs reduction measured on the selection set, in the run's convention."""

    name = "flops"

    def cost(self, model, cfg, log=print, lengths=None):
        from .flops import EncoderDims

        return EncoderDims.from_config(model.config)

    def judge(self, result: dict, plan, run) -> None:
        key = "flops_reduction_padded" if run.cfg.convention == "padded" else "flops_reduction_unpadded"
        result["meets_target"] = result[key] >= 1.0 / run.target_rel


class LatencyConstraint(Constraint):
    """[ours] The speed-up the machine's latency profile predicts for the plan on the selection lengths."""

    name = "latency"

    def cost(self, model, cfg, log=print, lengths=None):
        import torch

        from .strategies import SCORERS

        threads = cfg.inference_threads or torch.get_num_threads()
        return latency_cost(
            model,
            backend=cfg.inference_backend,
            batch_size=cfg.inference_batch_size,
            threads=threads,
            profile_path=cfg.latency_profile,
            log=log,
            lengths=lengths,
            scoring=SCORERS[cfg.scorer]().spec(cfg),  # how the run's plans will score: what the runtime pays
            pruning_layers=cfg.pruning_layers,  # where they drop: the floor plan calibrated on starts there
        )

    def judge(self, result: dict, plan, run) -> None:
        from .static import plan_relative_macs

        rel = plan_relative_macs(run.cost, plan, run.selection_lengths, run.reference)
        result["predicted_speedup"] = 1.0 / rel
        result["meets_target"] = rel <= run.target_rel + 1e-9

    def check_kept(self, run) -> dict | None:
        """The kept plan against the dense model, both timed on the first selection examples in the profile's
        setting (issue 22: predicted latency checked by measured latency on the training slice's lengths)."""
        from .latency_check import measure_plan

        if run.cfg.latency_check_examples == 0:
            return None
        return measure_plan(
            run.teacher, run.cost, run.plan, run.data.select_set, run.tokenizer, run.cfg.latency_check_examples
        )


CONSTRAINTS = {c.name: c for c in (FlopsConstraint, LatencyConstraint)}


def describe(cost) -> str:
    if isinstance(cost, LatencyCost):
        k = cost.key
        return f"latency ({k.get('backend')}, batch {k.get('batch_size')}, {k.get('threads')} threads)"
    return "FLOPs"
