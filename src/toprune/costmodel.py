"""A measured latency model of one encoder on one machine, for the latency constraint [ours] (issue: users are
billed in milliseconds, and at batch 1 a layer's time is mostly fixed per-operator cost, not tokens).

Per layer, with n tokens entering the attention and n' the FFN (the FLOPs model's split, toprune.flops):
    attention(n) = a0 + a1 n + a2 n^2        ffn(n') = f0 + f1 n'
plus a fixed cost (embeddings, head, the call itself) and an overhead for each layer whose tokens drop (it scores
with explicit attention instead of the fused kernel, ranks and gathers): a constant plus a cost per token entering it.
All in milliseconds per batch of ``batch_size`` examples of equal length, on the backend and thread count of the
profile: :class:`LatencyCost` is a cost model of :func:`toprune.flops.encoder_cost`, so the same constraint code
(expected cost of a soft plan, plan fitting, reachability) serves FLOPs and latency.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ToPruneError

PROFILE_VERSION = 7  # 2: whole-model fit with a per-token pruning overhead; 3: leaner exported selection (re-measured);
# 4: the key records the input lengths profiled (a fit over 8-128 tokens mispredicted 27-token STS-B at batch 1);
# 5: every timing lasts at least profile.MIN_TIMED_SECONDS, made in rounds (a shared VM is noisy and drifts);
# 6: the overhead is fitted on the plan's pruning layers (PruningPlan.drop_flags), not on the layers whose count fell;
# 7: the floor plan (CLS only from the first pruning layer) is calibrated on: the refusal is judged on it
PROFILE_MAX_TOKENS = 128  # longest input `toprune profile` times unless told; `prune` profiles its data's lengths


@dataclass(frozen=True)
class LatencyCost:
    num_layers: int
    attention: tuple[float, float, float]  # a0, a1, a2 (ms)
    ffn: tuple[float, float]  # f0, f1 (ms)
    fixed: float  # ms per call outside the layers
    prune_overhead: float = 0.0  # ms per pruning layer that really prunes (scores, ranks, gathers)
    key: dict = field(default_factory=dict)  # what it was measured for: model shape, backend, batch, threads
    prune_overhead_per_token: float = 0.0  # ms per token entering a layer that drops (scoring scales with it)

    @property
    def fixed_cost(self) -> float:
        return self.fixed

    def layer_cost(self, n_attn, n_ffn, prunes=None):
        """ms of one layer; a layer whose tokens drop between its attention and its FFN (it scores, ranks and
        gathers for the next one) pays the pruning overhead: in proportion to ``prunes`` when given (a soft plan:
        the probability that the layer prunes), else iff its FFN runs on fewer tokens than its attention."""
        a0, a1, a2 = self.attention
        f0, f1 = self.ffn
        if prunes is not None:
            drops = prunes
        else:
            drops = n_attn - n_ffn
            drops = drops.clamp(0.0, 1.0) if hasattr(drops, "clamp") else min(1.0, max(0.0, drops))
        overhead = (self.prune_overhead + self.prune_overhead_per_token * n_attn) * drops
        return a0 + a1 * n_attn + a2 * n_attn * n_attn + f0 + f1 * n_ffn + overhead

    def predict_ms(self, attn_counts, drops=None) -> float:
        """Predicted latency of one batch whose examples all carry ``attn_counts`` tokens into each layer (for a
        dynamically padded batch: the longest example's counts); ``drops``: the plan's
        :meth:`~toprune.plan.PruningPlan.drop_flags` (default: the layers whose count falls)."""
        from .flops import encoder_cost

        return float(encoder_cost(self, attn_counts, drops))

    def save(self, path: str | Path) -> Path:
        """Written atomically: two runs caching the same profile never leave a half-written file to the next."""
        from .safeio import atomic_write_text

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, json.dumps({"version": PROFILE_VERSION, **asdict(self)}, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path, expect: dict | None = None) -> LatencyCost:
        """A saved profile; with ``expect``, a one-line error when it was measured for another model shape,
        backend, batch size, thread count or machine (profiles do not transfer)."""
        try:
            data = json.loads(Path(path).read_text())
            cost = cls(
                int(data["num_layers"]),
                tuple(float(x) for x in data["attention"]),
                tuple(float(x) for x in data["ffn"]),
                float(data["fixed"]),
                float(data.get("prune_overhead", 0.0)),
                dict(data.get("key", {})),
                float(data.get("prune_overhead_per_token", 0.0)),
            )
            if len(cost.attention) != 3 or len(cost.ffn) != 2 or cost.num_layers < 1:
                raise ValueError("attention needs 3 coefficients, ffn 2, num_layers >= 1")
            shape = cost.key.get("shape")
            if shape and int(shape[0]) != cost.num_layers:
                raise ValueError(f"num_layers {cost.num_layers} but the key's model has {shape[0]} layers")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ToPruneError(f"{path}: not a latency profile ({type(exc).__name__}: {exc})") from None
        stale = cost.mismatch(expect or {})
        if stale:
            raise ToPruneError(f"{path} was measured for {stale}: run `toprune profile` again for this setting")
        return cost

    def mismatch(self, expect: dict) -> str:
        """'' when every expected key matches, else what differs, e.g. "batch_size 32 (not 1)"."""
        diffs = [f"{k} {self.key.get(k)!r} (not {v!r})" for k, v in expect.items() if self.key.get(k) != v]
        return ", ".join(diffs)


def profile_key(
    model,
    backend: str,
    batch_size: int,
    threads: int,
    max_tokens: int = PROFILE_MAX_TOKENS,
    median_tokens: int | None = None,
    scoring=None,
    pruning_layers=None,
) -> dict:
    """What a profile is valid for: the model's shape (not its weights), backend, batch, threads, machine, the
    longest input it timed and, when its lengths were drawn from data, their :func:`median_length` (the fit is a
    line through the lengths profiled: it extrapolates poorly outside them and is weighted where they lie); how the
    plans score tokens (``scoring``, a :class:`~toprune.plan.ScoringSpec`: value norms, merging and a score radius
    cost more per pruning layer than attention alone), the pruning layers when they are not the model's default
    ones (the floor plan calibrated on starts at the first) and the versions of the runtimes timed."""
    from .plan import ScoringSpec, default_pruning_layers, pruning_layers_or_default

    c = model.config
    shape = [int(getattr(c, name, 0) or 0) for name in ("num_hidden_layers", "hidden_size", "num_attention_heads")]
    shape.append(int(getattr(c, "intermediate_size", 0) or getattr(c, "hidden_dim", 0)))
    key = {
        "model_type": c.model_type,
        "shape": shape,
        "backend": backend,
        "batch_size": int(batch_size),
        "threads": int(threads),
        "max_tokens": int(max_tokens),
        "machine": machine(),
        "version": PROFILE_VERSION,
        "scoring": scoring_key(scoring or ScoringSpec()),
        "runtime": runtime_versions(backend),
    }
    layers = pruning_layers_or_default(pruning_layers, shape[0])
    custom = {"pruning_layers": layers} if pruning_layers and layers != default_pruning_layers(shape[0]) else {}
    return key | ({} if median_tokens is None else {"median_tokens": int(median_tokens)}) | custom


def scoring_key(scoring) -> dict:
    """What of a plan's scoring the runtime's cost depends on (not the random draws' seed)."""
    return {k: v for k, v in scoring.to_dict().items() if k != "seed"}


def runtime_versions(backend: str) -> str:
    """torch (and onnxruntime for its backend) versions: an upgrade changes kernels, so timings do not carry over."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch"] + (["onnxruntime"] if backend == "onnxruntime" else [])
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} ?")
    return ", ".join(found)


def profiled_length(lengths, limit: int) -> int:
    """The longest input a profile for these example lengths times: their 99th percentile rounded up to a multiple
    of 16 (a few outliers need not stretch the range the line is fitted over), at least 16, at most ``limit``."""
    if not len(lengths):
        return min(PROFILE_MAX_TOKENS, limit)
    p99 = float(np.percentile(np.asarray(lengths, dtype=np.float64), 99))
    return int(min(limit, max(16, -(-int(np.ceil(p99)) // 16) * 16)))


def median_length(lengths) -> int | None:
    """The median of the data's lengths rounded up to a multiple of 8 (None without data): a profile drawn from
    one task's lengths is reused for data of a similar spread, not for any data of the same longest input."""
    if lengths is None or not len(lengths):
        return None
    return int(-(-int(np.ceil(np.median(np.asarray(lengths, dtype=np.float64)))) // 8) * 8)


def machine() -> str:
    return f"{platform.node()} / {cpu_name()}"


def cpu_name() -> str:
    """The CPU's model name (what every latency table states), else what platform knows."""
    try:  # the model name says more than the architecture
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fit_polynomial(tokens, ms, degree: int) -> tuple[float, ...]:
    """Least-squares coefficients (constant first) of ms ~ sum_k c_k n^k; negative coefficients are refitted
    without their term (time never falls with more tokens)."""
    n, y = np.asarray(tokens, dtype=np.float64), np.asarray(ms, dtype=np.float64)
    if len(n) < degree + 1:
        raise ToPruneError(f"a degree-{degree} fit needs at least {degree + 1} token counts, got {len(n)}")
    active = list(range(degree + 1))
    while True:
        design = np.stack([n**k for k in active], axis=1)
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        if (coef >= 0).all() or len(active) == 1:
            break
        active.pop(int(np.argmin(coef)))
    out = [0.0] * (degree + 1)
    for k, c in zip(active, coef):
        out[k] = max(0.0, float(c))
    return tuple(out)


# what a whole-model timing is regressed on: the terms of encoder_cost summed over the layers (see layer_cost)
FEATURES = (
    "constant",
    "attention tokens",
    "attention tokens^2",
    "FFN tokens",
    "dropping layers",
    "tokens entering dropping layers",
)


def cost_features(attn_counts, drops=None) -> list[float]:
    """The sums that :meth:`LatencyCost.predict_ms` is linear in, for tokens ``attn_counts`` entering each layer
    (for a padded batch: the padded length each layer runs at) and the layers that pay the pruning overhead
    (``drops``, a plan's :meth:`~toprune.plan.PruningPlan.drop_flags`; default: the layers whose count falls)."""
    counts = [float(c) for c in attn_counts]
    ffn = counts[1:] + counts[-1:]
    if drops is None:
        drops = [1.0 if f < c else 0.0 for c, f in zip(counts, ffn)]
    drops = [float(d) for d in drops]
    return [
        1.0,
        sum(counts),
        sum(c * c for c in counts),
        sum(ffn),
        sum(drops),
        sum(d * c for d, c in zip(drops, counts)),
    ]


def robust_nnls(design, ms, iterations: int = 20, huber: float = 1.345) -> np.ndarray:
    """Non-negative coefficients of ms ~ design @ coef that minimise the *relative* error (rows weighted by 1/ms:
    a 1 ms miss matters more on a 5 ms call than on a 200 ms one), iteratively reweighted with Huber's weights so
    a few disturbed timings (another process woke up) do not pull the fit. Columns are scaled to [0, 1] first (the
    features span six orders of magnitude)."""
    from scipy.optimize import nnls

    x, y = np.asarray(design, dtype=np.float64), np.asarray(ms, dtype=np.float64)
    if len(y) < x.shape[1]:
        raise ToPruneError(f"a latency fit needs at least {x.shape[1]} timings, got {len(y)}")
    if not np.isfinite(y).all() or (y <= 0).any():
        raise ToPruneError("latency timings must be positive and finite")
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    x = x / scale
    weights = np.ones_like(y)
    for _ in range(iterations):
        w = weights / y
        coef = nnls(x * w[:, None], y * w)[0]
        rel = (x @ coef - y) / y
        spread = max(1.4826 * float(np.median(np.abs(rel - np.median(rel)))), 1e-3)  # MAD; 0.1% floor
        new = np.minimum(1.0, huber * spread / np.maximum(np.abs(rel), 1e-12))
        if np.allclose(new, weights, atol=1e-4):
            break
        weights = new
    return coef / scale


def fit_latency_cost(
    attn_counts, ms, key: dict, layer_constants: tuple[float, float] = (0.0, 0.0), drops=None
) -> LatencyCost:
    """:class:`LatencyCost` fitted to whole-model timings (``ms[i]`` of a batch whose layers ran ``attn_counts[i]``
    tokens) by :func:`robust_nnls` on :func:`cost_features`.

    Whole-model timings cannot tell a per-layer constant from the fixed cost (every call runs every layer); the
    split comes from ``layer_constants`` (a0, f0, e.g. one layer's parts timed alone), capped by the fitted total,
    else everything constant is ``fixed``. Predictions do not depend on the split."""
    num_layers = len(attn_counts[0])
    if any(len(c) != num_layers for c in attn_counts):
        raise ToPruneError("every calibration batch needs one token count per layer")
    drops = drops or [None] * len(attn_counts)  # per batch: the plan's drop_flags (None: the layers whose count falls)
    features = [cost_features(c, d) for c, d in zip(attn_counts, drops)]
    c0, c1, c2, c3, c4, c5 = (float(c) for c in robust_nnls(features, ms))
    a0, f0 = (max(0.0, float(v)) for v in layer_constants)
    share = min(1.0, c0 / (num_layers * (a0 + f0))) if a0 + f0 > 0 else 0.0
    a0, f0 = a0 * share, f0 * share
    return LatencyCost(num_layers, (a0, c1, c2), (f0, c3), max(0.0, c0 - num_layers * (a0 + f0)), c4, key, c5)
