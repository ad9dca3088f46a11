"""What the ToP constraint counts: FLOPs (the paper) or measured latency on this machine [ours].

Both are cost models of :func:`toprune.flops.encoder_cost` (``num_layers``, ``layer_cost``, ``fixed_cost``): the
expected cost of the soft plan in the Lagrangian, plan fitting, the static schedule and the reachability check use
whichever the run chose, through the same code. FLOPs are always measured and reported as well, both conventions.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .costmodel import LatencyCost, profile_key
from .errors import ToPruneError
from .flops import EncoderDims

CONSTRAINTS = ("flops", "latency")


def profile_cache_dir() -> Path:
    return Path(os.environ.get("TOPRUNE_CACHE", Path.home() / ".cache" / "toprune")) / "profiles"


def cached_profile_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return profile_cache_dir() / f"{digest}.json"


def latency_cost(model, backend: str, batch_size: int, threads: int, profile_path=None, log=print) -> LatencyCost:
    """The model's latency profile for this backend, batch size and thread count: the given file (refused if it
    was measured for another setting), else the cache of this machine, else measured now and cached."""
    from .profile import profile

    key = profile_key(model, backend, batch_size, threads)
    if profile_path:
        return LatencyCost.load(profile_path, expect=key)
    cached = cached_profile_path(key)
    if cached.is_file():
        log(f"latency profile: reusing {cached}")
        return LatencyCost.load(cached, expect=key)
    exports = ", one ONNX export per plan timed" if backend == "onnxruntime" else ""
    log(f"latency profile: measuring {backend}, batch {batch_size}, {threads} threads (a few minutes{exports})")
    cost = profile(model, backend, batch_size, threads)
    cost.save(cached)
    return cost


def constraint_cost(kind: str, model, **latency) -> EncoderDims | LatencyCost:
    if kind not in CONSTRAINTS:
        raise ToPruneError(f"constraint must be one of {', '.join(CONSTRAINTS)}, got {kind!r}")
    if kind == "flops":
        return EncoderDims.from_config(model.config)
    return latency_cost(model, **latency)


def describe(cost) -> str:
    if isinstance(cost, LatencyCost):
        k = cost.key
        return f"latency ({k.get('backend')}, batch {k.get('batch_size')}, {k.get('threads')} threads)"
    return "FLOPs"
