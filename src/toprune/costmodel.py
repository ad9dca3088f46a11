"""A measured latency model of one encoder on one machine, for the latency constraint [ours] (issue: users are
billed in milliseconds, and at batch 1 a layer's time is mostly fixed per-operator cost, not tokens).

Per layer, with n tokens entering the attention and n' the FFN (the FLOPs model's split, toprune.flops):
    attention(n) = a0 + a1 n + a2 n^2        ffn(n') = f0 + f1 n'
plus a fixed cost (embeddings, head, the call itself) and an overhead per pruning layer (scoring, ranking, gather).
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

PROFILE_VERSION = 1


@dataclass(frozen=True)
class LatencyCost:
    num_layers: int
    attention: tuple[float, float, float]  # a0, a1, a2 (ms)
    ffn: tuple[float, float]  # f0, f1 (ms)
    fixed: float  # ms per call outside the layers
    prune_overhead: float = 0.0  # ms per pruning layer that really prunes (scores, ranks, gathers)
    key: dict = field(default_factory=dict)  # what it was measured for: model shape, backend, batch, threads

    @property
    def fixed_cost(self) -> float:
        return self.fixed

    def layer_cost(self, n_attn, n_ffn):
        """ms of one layer; a layer whose tokens drop between its attention and its FFN (it scores, ranks and
        gathers for the next one) pays the pruning overhead, smoothly in fractional expected counts."""
        a0, a1, a2 = self.attention
        f0, f1 = self.ffn
        drops = n_attn - n_ffn
        drops = drops.clamp(0.0, 1.0) if hasattr(drops, "clamp") else min(1.0, max(0.0, drops))
        return a0 + a1 * n_attn + a2 * n_attn * n_attn + f0 + f1 * n_ffn + self.prune_overhead * drops

    def predict_ms(self, attn_counts) -> float:
        """Predicted latency of one batch whose examples all carry ``attn_counts`` tokens into each layer (for a
        dynamically padded batch: the longest example's counts)."""
        from .flops import encoder_cost

        return float(encoder_cost(self, attn_counts))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"version": PROFILE_VERSION, **asdict(self)}, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, expect: dict | None = None) -> LatencyCost:
        """A saved profile; with ``expect``, a one-line error when it was measured for another model shape,
        backend, batch size, thread count or machine (profiles do not transfer)."""
        try:
            data = json.loads(Path(path).read_text())
            cost = cls(int(data["num_layers"]), tuple(data["attention"]), tuple(data["ffn"]), float(data["fixed"]),
                       float(data.get("prune_overhead", 0.0)), dict(data.get("key", {})))
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


def profile_key(model, backend: str, batch_size: int, threads: int) -> dict:
    """What a profile is valid for: the model's shape (not its weights), backend, batch, threads and machine."""
    c = model.config
    shape = [int(getattr(c, name, 0) or 0) for name in ("num_hidden_layers", "hidden_size", "num_attention_heads")]
    shape.append(int(getattr(c, "intermediate_size", 0) or getattr(c, "hidden_dim", 0)))
    return {"model_type": c.model_type, "shape": shape, "backend": backend, "batch_size": int(batch_size),
            "threads": int(threads), "machine": machine()}


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
