"""The pruning plan: which rank positions survive at each pruning layer, saved beside the HF weights.

A plan is what inference needs and nothing more: for every layer that prunes, the K rank bins that are kept
(bin 0 = the best-scored tokens). Because masks act on *relative* rank positions, one plan serves every sequence
length: an example with m prunable survivors keeps the ranks r < m whose bin floor(r * K / m) is kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ToPruneError
from .safeio import atomic_write_text

PLAN_FILENAME = "toprune_plan.json"
FORMAT_VERSION = 1
FLOOR_FORMAT_VERSION = 2  # a plan with a token floor: older readers would ignore it and prune short inputs
SCORING_KINDS = ("attention", "question", "random", "value")
# plans written before ScoringSpec carried these in ``meta``; they are read back into the spec
_LEGACY_META = {"scorer": "kind", "score_radius": "radius", "random_seed": "seed"}


@dataclass(frozen=True)
class ScoringSpec:
    """How a plan ranks the survivors at inference: part of the plan's behaviour (saved with it, so a reloaded model
    scores as the run did), unlike ``PruningPlan.meta``, which is provenance only.

    ``kind``: attention received from every row, from the question (first-segment) rows only, attention received
    weighted by the norm of the value vector the token carries (``value``), or random draws (the floor baseline);
    or the name of a scorer registered in :mod:`toprune.strategies` (an experiment's own);
    ``radius`` [ours]: each score raised to the best within that many positions before ranking;
    ``seed``: the random draws' seed (evaluation and a reload draw the same tokens);
    ``merge`` [ours, after ToMe]: removed tokens are merged into their most similar survivor instead of dropped
    (:mod:`toprune.merging`; inference and fixed plans: the gather path)."""

    kind: str = "attention"
    radius: int = 0
    seed: int = 0
    merge: bool = False

    def __post_init__(self) -> None:
        if self.kind not in SCORING_KINDS:
            from .strategies import SCORERS  # a registered scorer of one's own (imported late: it imports this)

            kinds = dict.fromkeys((*SCORING_KINDS, *SCORERS))
            if self.kind not in kinds:
                raise ToPruneError(f"unknown scorer {self.kind!r}; choose one of {', '.join(kinds)}")
        if not isinstance(self.radius, int) or self.radius < 0:
            raise ToPruneError(f"score radius must be an integer >= 0, got {self.radius!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ToPruneError(f"scoring seed must be an integer >= 0, got {self.seed!r}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "radius": self.radius, "seed": self.seed, **({"merge": True} if self.merge else {})}

    @classmethod
    def from_dict(cls, data: dict) -> "ScoringSpec":
        merge = data.get("merge", False)
        if not isinstance(merge, bool):
            raise ToPruneError(f"scoring merge must be true or false, got {merge!r}")
        kind, radius, seed = str(data.get("kind", "attention")), int(data.get("radius", 0)), int(data.get("seed", 0))
        return cls(kind, radius, seed, merge)

    @classmethod
    def from_legacy_meta(cls, meta: dict) -> "ScoringSpec":
        """The spec of a plan saved with its scoring in ``meta`` (the keys are removed from ``meta``)."""
        found = {field_: meta.pop(key) for key, field_ in _LEGACY_META.items() if key in meta}
        return cls.from_dict(found)


def default_pruning_layers(num_layers: int) -> list[int]:
    """Layers whose input is pruned by default: from about L/6 on (2.. for 12 layers, 1.. for 6), never layer 0."""
    first = max(1, round(num_layers / 6))
    return list(range(first, num_layers))


def pruning_layers_or_default(pruning_layers, num_layers: int) -> list[int]:
    """The given pruning layers sorted and de-duplicated (one setting however they are written), else the default
    ones: what a run prunes on, what a latency profile is keyed by and calibrated on."""
    return sorted({int(layer) for layer in pruning_layers}) if pruning_layers else default_pruning_layers(num_layers)


def below_floor(m: int, min_tokens: int) -> bool:
    """[ours] Does an input with m candidates (its tokens but CLS) at a pruning layer keep them all there: fewer
    than ``min_tokens`` tokens, CLS included (short texts cost little and lose the most per token removed)."""
    return m + 1 < min_tokens


def check_min_tokens(value, what: str = "min_tokens") -> None:
    """One-line refusal of a token floor that is not an integer >= 0 (plans, and run settings before any load)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ToPruneError(f"{what} must be an integer >= 0, got {value!r}")


def kept_ranks(kept_bins: list[bool], m: int, min_tokens: int = 0) -> list[int]:
    """Rank positions (0 = best) that survive among m ranked candidates: rank r is in bin floor(r * K / m); all of
    them below the plan's token floor. (``survivors.rank_keep`` is the same rule on tensors, for padded batches.)"""
    if below_floor(m, min_tokens):
        return list(range(m))
    k = len(kept_bins)
    return [r for r in range(m) if kept_bins[(r * k) // m]]


def kept_count(kept_bins: list[bool], m: int, min_tokens: int = 0) -> int:
    """How many of m ranked candidates survive a layer with these kept bins."""
    return len(kept_ranks(kept_bins, m, min_tokens))


@dataclass
class PruningPlan:
    """Per pruning layer, the kept rank bins (layers absent from ``kept_bins`` do not prune), and how survivors are
    scored (``scoring``). ``meta`` is provenance (task, target, metrics): nothing reads it to decide behaviour.
    ``min_tokens`` [ours]: the token floor; an input with fewer tokens (CLS included) when it reaches a pruning
    layer keeps them all there (0: no floor)."""

    num_layers: int
    num_bins: int
    kept_bins: dict[int, list[bool]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    min_tokens: int = 0

    def __post_init__(self) -> None:
        self.kept_bins = {
            int(k): [bool(b) for b in v] for k, v in sorted(self.kept_bins.items(), key=lambda kv: int(kv[0]))
        }
        self.validate()
        # after a layer that keeps no bin only CLS is left: a later pruning layer would score, rank and gather that one
        # token (the runtime's overhead) and drop nothing, so it is not part of the plan (unless a token floor lets
        # short inputs through that layer whole)
        empty = next((layer for layer, bins in self.kept_bins.items() if not any(bins)), None)
        empty = None if self.min_tokens else empty
        if empty is not None:
            self.kept_bins = {layer: bins for layer, bins in self.kept_bins.items() if layer <= empty}

    # -- constructors -------------------------------------------------------------------------------------------
    @classmethod
    def keep_all(cls, num_layers: int, meta: dict | None = None, scoring: ScoringSpec | None = None) -> "PruningPlan":
        return cls(
            num_layers=num_layers, num_bins=1, kept_bins={}, meta=dict(meta or {}), scoring=scoring or ScoringSpec()
        )

    @classmethod
    def from_keep_ratios(
        cls,
        num_layers: int,
        ratios: dict[int, float],
        num_bins: int = 100,
        scoring: ScoringSpec | None = None,
        min_tokens: int = 0,
    ) -> "PruningPlan":
        """A monotone plan: at layer l keep the top ``ratios[l]`` of the survivors (resolution 1/num_bins)."""
        kept = {}
        for layer, ratio in ratios.items():
            if not 0.0 <= ratio <= 1.0:
                raise ToPruneError(f"keep ratio for layer {layer} must be in [0, 1], got {ratio}")
            n_keep = round(ratio * num_bins)
            if n_keep < num_bins:
                kept[layer] = [b < n_keep for b in range(num_bins)]
        scoring = scoring or ScoringSpec()
        return cls(num_layers=num_layers, num_bins=num_bins, kept_bins=kept, scoring=scoring, min_tokens=min_tokens)

    @classmethod
    def from_masks(
        cls, num_layers: int, pruning_layers: list[int], kept, gate_on, meta=None, scoring: ScoringSpec | None = None
    ) -> "PruningPlan":
        """From deterministic gate masks (``HardConcreteGates.deterministic()``): layers whose gate is off vanish."""
        kept_bins = {
            layer: [bool(b) for b in kept[p].tolist()]
            for p, layer in enumerate(pruning_layers)
            if bool(gate_on[p]) and not bool(kept[p].all())
        }
        return cls(
            num_layers=num_layers,
            num_bins=int(kept.shape[1]),
            kept_bins=kept_bins,
            meta=dict(meta or {}),
            scoring=scoring or ScoringSpec(),
        )

    # -- queries ------------------------------------------------------------------------------------------------
    def prunes(self, layer: int) -> bool:
        return layer in self.kept_bins

    def drop_flags(self) -> list[float]:
        """Per layer, 1.0 where the runtime scores, ranks and gathers after it (the next layer prunes), 0.0 elsewhere:
        the pruning overhead a latency model charges. Plan-wide, not per input: a short input whose count does not
        fall at a pruning layer still pays for the scoring and the gather."""
        return [1.0 if self.prunes(layer + 1) else 0.0 for layer in range(self.num_layers)]

    def keep_ratio(self, layer: int) -> float:
        """Fraction of bins kept at ``layer`` (1.0 where it does not prune): the keep ratio for long inputs."""
        bins = self.kept_bins.get(layer)
        return 1.0 if bins is None else sum(bins) / len(bins)

    def token_counts(self, seq_len: int) -> list[int]:
        """Tokens entering each layer's attention for one example of ``seq_len`` real tokens (CLS included)."""
        counts, n = [], seq_len
        for layer in range(self.num_layers):
            if layer in self.kept_bins and n > 1:
                n = 1 + kept_count(self.kept_bins[layer], n - 1, self.min_tokens)
            counts.append(n)
        return counts

    # -- (de)serialisation --------------------------------------------------------------------------------------
    def validate(self, num_layers: int | None = None) -> None:
        if num_layers is not None and num_layers != self.num_layers:
            raise ToPruneError(f"pruning plan is for {self.num_layers} layers but the model has {num_layers}")
        if self.num_layers < 1 or self.num_bins < 1:
            raise ToPruneError("pruning plan needs num_layers >= 1 and num_bins >= 1")
        check_min_tokens(self.min_tokens, "pruning plan min_tokens")
        for layer, bins in self.kept_bins.items():
            if not 1 <= layer < self.num_layers:
                raise ToPruneError(f"pruning plan prunes layer {layer}; valid layers are 1..{self.num_layers - 1}")
            if len(bins) != self.num_bins:
                raise ToPruneError(f"pruning plan layer {layer} has {len(bins)} bins, expected {self.num_bins}")

    def to_dict(self) -> dict:
        floor = {"min_tokens": self.min_tokens} if self.min_tokens else {}
        return {
            "format_version": FLOOR_FORMAT_VERSION if self.min_tokens else FORMAT_VERSION,
            "num_layers": self.num_layers,
            "num_bins": self.num_bins,
            "kept_bins": {str(k): "".join("1" if b else "0" for b in v) for k, v in sorted(self.kept_bins.items())},
            "keep_ratio_per_layer": [round(self.keep_ratio(layer), 4) for layer in range(self.num_layers)],
            **floor,
            "scoring": self.scoring.to_dict(),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PruningPlan":
        try:
            version = data.get("format_version")
            if version not in (FORMAT_VERSION, FLOOR_FORMAT_VERSION):
                raise ValueError(f"unsupported format_version {version!r}")
            floor = data.get("min_tokens", 0)
            if version == FORMAT_VERSION and floor:
                raise ValueError(f"min_tokens needs format_version {FLOOR_FORMAT_VERSION}")
            kept = {}
            for k, v in data["kept_bins"].items():
                if not isinstance(v, str) or set(v) - {"0", "1"}:
                    raise ValueError(f"kept_bins[{k}] must be a string of 0/1")
                kept[int(k)] = [c == "1" for c in v]
            meta = dict(data.get("meta", {}))
            legacy = ScoringSpec.from_legacy_meta(meta)  # always: no behaviour key stays in meta
            scoring = ScoringSpec.from_dict(data["scoring"]) if "scoring" in data else legacy
            return cls(int(data["num_layers"]), int(data["num_bins"]), kept, meta, scoring, floor)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ToPruneError(f"invalid pruning plan: {exc}") from None

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PLAN_FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")  # never half a plan

    @classmethod
    def load(cls, folder: str | Path, num_layers: int | None = None) -> "PruningPlan":
        path = Path(folder) / PLAN_FILENAME
        if not path.is_file():
            raise ToPruneError(f"no pruning plan in {folder} (expected {PLAN_FILENAME})")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ToPruneError(f"corrupt pruning plan {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ToPruneError(f"corrupt pruning plan {path}: not a JSON object")
        plan = cls.from_dict(data)
        plan.validate(num_layers)
        return plan

    def describe(self) -> str:
        ratios = ", ".join(f"L{layer}:{self.keep_ratio(layer):.2f}" for layer in range(self.num_layers))
        merged = "; removed tokens merged" if self.scoring.merge else ""
        floor = f"; inputs under {self.min_tokens} tokens kept whole" if self.min_tokens else ""
        return f"PruningPlan({self.num_layers} layers, K={self.num_bins}; keep ratio per layer {ratios}{merged}{floor})"


def long_input_keep_fraction(plan: PruningPlan) -> float:
    """Cumulative keep fraction at the last layer for long inputs (a quick summary number)."""
    return math.prod(plan.keep_ratio(layer) for layer in range(plan.num_layers))
