"""The pruning run's strategies as objects, and the one registry that maps the user-facing names to them.

* a **scorer** decides how survivors are ranked (the plan's :class:`~toprune.plan.ScoringSpec`);
* a **plan source** decides what plan is trained: learned gates (ToP) or a fixed schedule (the baselines);
* a **ranking target** decides what the early score layers learn to rank like;
* a **constraint** (:mod:`toprune.constraint`) decides what the target counts.

A new one of any kind is one class added to ``REGISTRY``; :class:`~toprune.prune_config.PruneConfig` takes its
choice lists from here. Heavy imports stay inside the methods: the CLI builds its parser from this module.
"""

from __future__ import annotations

import copy

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .constraint import CONSTRAINTS
from .errors import ToPruneError
from .plan import SCORING_KINDS, ScoringSpec

if TYPE_CHECKING:  # torch loads with the runtime, never with this module (the CLI's parser is built from it)
    import torch


# -- scorers ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreView:
    """What a scorer sees at one layer, in the current slots (on the inference path: the survivors, re-padded).

    ``layer``: the layer whose attention this is (at a pruning layer l, layer l - 1's scores decide who enters l);
    ``probs`` (B, H, n, n): its attention probabilities; ``hidden`` (B, n, d): its post-attention states;
    ``query_mask`` (B, n) bool or None (every row): the rows the library's score averages over (the valid rows, or
    the question's for a scorer ``by_question``); ``valid`` (B, n) bool: real, surviving slots; ``positions``
    (B, n): each slot's position in the original input (meaningless where not ``valid``)."""

    layer: int
    probs: torch.Tensor
    hidden: torch.Tensor
    query_mask: torch.Tensor | None
    valid: torch.Tensor
    positions: torch.Tensor


class Scorer:
    """How survivors are ranked: the plan's scoring spec, and the random draws of training and evaluation.

    An experiment's own scorer is a subclass whose ``kind`` is a new name, registered under it
    (``REGISTRY["scorer"][kind] = cls``) and named by the plan (``ScoringSpec(kind)``, or ``PruneConfig(scorer=kind)``):
    the runtime then ranks tokens by its :meth:`token_scores` at every layer it scores. A saved plan keeps the name
    only: register the class before loading it. The built-in kinds (attention, question, value, random) are scored
    inline by the runtime and never call it."""

    kind = ""
    by_question = False  # the runtime's query rows are the first segment's (the question's), not every valid row
    by_value = False  # the runtime weights attention received by the norms of the tokens' value vectors

    def spec(self, cfg) -> ScoringSpec:
        return ScoringSpec(self.kind, cfg.score_radius, merge=cfg.merge)

    def token_scores(self, view: ScoreView) -> torch.Tensor:
        """(B, n) scores of the current slots, higher survives (the plan's radius is applied after). This default is
        the library's: attention received, mean over heads and ``view.query_mask`` rows."""
        from .scoring import token_scores

        return token_scores(view.probs, view.query_mask)

    def check(self, data) -> None:
        """One-line error if the data cannot be scored this way."""

    def training_draws(self, sampler):
        """The generator of random scores while training (None: scores come from attention)."""
        return None

    def evaluation_draws(self, seed: int):
        """The generator of random scores at every evaluation: the same draws each time."""
        return None


class AttentionScorer(Scorer):
    """The authors': attention received from every row."""

    kind = "attention"


class QuestionScorer(Scorer):
    """[ours] Attention received from the first segment's (the question's) rows only."""

    kind = "question"
    by_question = True

    def check(self, data) -> None:
        if "token_type_ids" not in data.dev.column_names:
            raise ToPruneError(
                "--scorer question needs token_type_ids to find the question's rows; this tokenizer "
                "does not make them (RoBERTa, XLM-R, DistilBERT): use the attention scorer"
            )


class ValueScorer(Scorer):
    """[ours] Attention received weighted by the norm of the value vector the token carries (what it adds to the
    context, not how much it is looked at); the better ranking for mean-pooled sentence embeddings."""

    kind = "value"
    by_value = True


class RandomScorer(Scorer):
    """The floor baseline: random survivors, drawn from the run's sampler while training and from the seed at
    evaluation (saved in the spec, so a reloaded model draws the same)."""

    kind = "random"

    def spec(self, cfg) -> ScoringSpec:
        return ScoringSpec(self.kind, 0, cfg.seed, merge=cfg.merge)

    def training_draws(self, sampler):
        return sampler

    def evaluation_draws(self, seed: int):
        import torch

        return torch.Generator().manual_seed(seed)


# -- plan sources -------------------------------------------------------------------------------------------------
class PlanSource:
    """What plan the run trains: ``learned`` (gates trained under the constraint) or a fixed schedule."""

    name = ""
    learned = False
    ranks_fixed = True  # a ranking target that trains under a fixed plan (the answer) does so here

    def scorer(self, cfg) -> Scorer:
        """The scorer of the plans this source makes."""
        return SCORERS[cfg.scorer]()

    def fixed_plan(self, run):
        """The plan trained from the first step (None: learned)."""
        return None

    def method_label(self, run) -> str:
        """The method a kept plan records (its provenance; `toprune frontier` labels rows by it)."""
        return self.name


class LearnedGates(PlanSource):
    """ToP: hard-concrete gates learned under the constraint, then a deterministic plan (rounded or fitted)."""

    name = "top"
    learned = True


class StaticSchedule(PlanSource):
    """The baseline: every pruning layer keeps the same share of the best-scored tokens, at the target."""

    name = "static"

    def fixed_plan(self, run):
        from .static import static_plan

        spec = self.scorer(run.cfg).spec(run.cfg)
        return static_plan(
            run.cost, run.layers, run.split_lengths, run.target_rel, run.reference, spec, min_tokens=run.cfg.min_tokens
        )


class GivenPlan(PlanSource):
    """[ours] The plan of the pruned model the run starts from (``--init-from``), fixed: a further fine-tuning of a
    kept model, e.g. quantisation-aware (``--qat``)."""

    name = "given"

    def fixed_plan(self, run):
        from .static import plan_relative_macs

        plan = copy.deepcopy(run.init_plan)
        plan.meta = {**plan.meta, "init_from": run.cfg.init_from}
        if run.cfg.min_tokens:  # the given plan's own floor otherwise
            plan.min_tokens = run.cfg.min_tokens
        rel = plan_relative_macs(run.cost, plan, run.selection_lengths, run.reference)
        if rel > run.target_rel * (1 + 1e-6):  # else no checkpoint could ever be kept
            raise ToPruneError(
                f"the plan of {run.cfg.init_from} reaches {1 / rel:.2f}x on this data, short of --target "
                f"{run.cfg.target}: pass a target it meets"
            )
        return plan

    def method_label(self, run) -> str:
        return run.init_plan.meta.get("method", self.name)  # still the method that found the plan


class RandomSchedule(StaticSchedule):
    """The floor: the static schedule's counts, random survivors (no ranking to train)."""

    name = "random"
    ranks_fixed = False  # random survivors: no ranking decides anything

    def scorer(self, cfg) -> Scorer:
        return RandomScorer()


# -- ranking targets ----------------------------------------------------------------------------------------------
class RankTarget:
    """What the student's early score layers learn to rank like."""

    name = ""
    per_pair = False  # the loss over pairs of grades (two-grade labels) instead of the top-k lists
    under_fixed_plan = False  # also trained under a fixed plan, where the ranking alone decides the drops

    def check(self, cfg) -> None:
        """One-line error if the task cannot give this target."""

    def teacher_score_layers(self, num_layers: int) -> set[int]:
        return set()

    def default_rank_layers(self, layers: list[int], num_layers: int) -> list[int]:
        """The authors': the first ~L/4 score layers (the later ones rank well on their own)."""
        first = layers[0]
        return list(range(first - 1, first - 1 + max(1, round(num_layers / 4))))

    def labels(self, run, batch: dict, teacher_logits, valid):
        raise NotImplementedError


class AttentionTarget(RankTarget):
    """The authors': the teacher's final-layer attention top-k."""

    name = "attention"

    def teacher_score_layers(self, num_layers: int) -> set[int]:
        return {num_layers - 1}

    def labels(self, run, batch, teacher_logits, valid):
        from .ranking import ranking_labels

        last = run.dims.num_layers - 1
        return ranking_labels(run.teacher_state.last.scores[last], valid, run.cfg.topk)


class AnswerTarget(RankTarget):
    """[ours] QA: the teacher's answer relevance from its start/end logits, the top-k above every other token; it
    keeps training under a fixed plan, where QA accuracy hangs on the answer's survival."""

    name = "answer"
    per_pair = True
    under_fixed_plan = True

    def check(self, cfg) -> None:
        from .squad import is_squad

        if not is_squad(cfg.task):
            raise ToPruneError("--rank-target answer needs a question-answering task (squad, squad_v2)")

    def default_rank_layers(self, layers, num_layers):
        return [layer - 1 for layer in layers]  # every layer whose scores decide a drop

    def labels(self, run, batch, teacher_logits, valid):
        from .qa import answer_region
        from .ranking import answer_labels

        return answer_labels(teacher_logits, valid, run.cfg.topk, answer_region(batch, valid))


def _by_name(*classes) -> dict:
    return {getattr(c, "name", None) or c.kind: c for c in classes}


# user choices; RandomScorer comes with --method random
SCORERS = _by_name(AttentionScorer, QuestionScorer, ValueScorer)
PLAN_SOURCES = _by_name(LearnedGates, StaticSchedule, RandomSchedule, GivenPlan)
RANK_TARGETS = _by_name(AttentionTarget, AnswerTarget)
# PruneConfig field -> {user-facing name: strategy class}: the only place these names are mapped
REGISTRY = {"method": PLAN_SOURCES, "scorer": SCORERS, "rank_target": RANK_TARGETS, "constraint": CONSTRAINTS}


def custom_scorer(kind: str) -> Scorer | None:
    """The registered scorer a plan's scoring kind names, when it is an experiment's own (None: a built-in kind)."""
    return None if kind in SCORING_KINDS else build("scorer", kind)


def scorer_class(kind: str) -> type[Scorer]:
    """The scorer class plans scored ``kind`` name (built in, or an experiment's registered one): the one place the
    runtime learns its traits (``by_question``, ``by_value``). An unknown kind reads as the plain base class."""
    return {**_by_name(AttentionScorer, QuestionScorer, ValueScorer, RandomScorer), **SCORERS}.get(kind, Scorer)


def build(field_name: str, name: str):
    """The strategy object a config value names (one-line error for an unknown name)."""
    choices = REGISTRY[field_name]
    if name not in choices:
        raise ToPruneError(f"{field_name} must be one of {', '.join(choices)}, got {name!r}")
    return choices[name]()
