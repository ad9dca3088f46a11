"""The ToP pruner (METHOD.md §1, §3, §5, §6): from a fine-tuned dense teacher to a pruned model at a target.

Loss = logit distillation from the teacher (T^2 KL at temperature T; MSE on labels for regression)
     + ranking distillation (teacher's final-layer top-k into early student score layers, weight decaying)
     + Lagrangian lambda1 (s - t) + lambda2 (s - t)^2 on the expected cost sparsity s, target t ramped up.
Weights, gate logits and multipliers have their own learning rates; the multipliers do gradient *ascent*.
Every ``eval_every`` steps the deterministic plan is evaluated on the selection set (a held-out slice of the training
data, :mod:`toprune.selection`) with its real cost measured on the inference path; the best checkpoint that meets the
target is kept, and the dev set is evaluated once, on it, at the end.

:class:`Pruner` holds everything in memory (models, tokenizer, data); the strategies (:mod:`toprune.strategies`)
decide what plan is trained, how survivors are scored, what the ranking target and the constraint are. Loading from
folders, checkpoints and the run folder are :class:`toprune.prune.ToPRun`'s.
"""

from __future__ import annotations

import copy
import functools

import torch
from accelerate import Accelerator
from transformers import get_linear_schedule_with_warmup

from .constraint import constraint_cost, describe
from .errors import ToPruneError
from .flops import EncoderDims, min_relative_macs, parse_target
from .gates import HardConcreteGates
from .plan import PruningPlan
from .prune_config import PruneConfig, check_config, resolve_layers
from .pruner_steps import DIVERGED, TrainingSteps
from .qat import fake_int8
from .runtime import apply_pruning, pruning_state
from .strategies import SCORERS, build
from .train import TaskData, check_qa_head, evaluate, make_loader, seed_everything
from .validate import check_finite_weights, check_label_names, check_max_length, check_trained, training_steps


class Pruner(TrainingSteps):
    """ToP pruning of an in-memory ``student`` (usually a copy of the teacher) against ``teacher`` on ``data``
    (a :class:`toprune.train.TaskData`: tokenised train, selection and dev splits), with the settings of ``config``
    (its folder fields are not used here). ``fit()`` trains and returns the run's numbers; then ``plan`` is the kept
    plan and ``model`` the student with the kept weights and plan applied.

    ``reseed=False``: the caller already seeded (before making the models and the data) and wants that state."""

    def __init__(
        self,
        student,
        teacher,
        tokenizer,
        data: TaskData,
        config: PruneConfig,
        log=print,
        accelerator: Accelerator | None = None,
        reseed: bool = True,
    ) -> None:
        cfg = config
        self.cfg, self.log, self.tokenizer, self.data = cfg, log, tokenizer, data
        self.target_rel = parse_target(cfg.target)
        check_config(cfg)
        if reseed:
            seed_everything(cfg.seed)
        # one process: a no-op wrapper; under `accelerate launch`: DDP for the student, sharded batches
        self.accelerator = accelerator or Accelerator()
        self.device = self.accelerator.device
        self.source = build("method", cfg.method)  # what plan is trained
        self.target = build("rank_target", cfg.rank_target)  # what the score layers learn to rank like
        self.constraint = build("constraint", cfg.constraint)  # what --target counts
        self.scorer = SCORERS[cfg.scorer]()  # how the student (and the teacher, for the target) score tokens
        self.plan_scorer = self.source.scorer(cfg)  # how the trained plan scores its survivors
        self.scorer.check(data)
        self.teacher = teacher.to(self.device)
        self.student = student.to(self.device)
        self.teacher_name = f"teacher {cfg.teacher}" if cfg.teacher else "the teacher"
        self.check_teacher()
        config_ = self.student.config
        self.dims = EncoderDims.from_config(config_)
        # checked before the latency constraint calibrates on them: a bad --pruning-layers is named, not timed
        self.layers, self.rank_layers = resolve_layers(cfg, config_.num_hidden_layers)
        # what the constraint counts: MACs (self.dims) or measured milliseconds; FLOPs are reported either way
        self.cost = constraint_cost(self.constraint, self.teacher, cfg, log, lengths=self.split_lengths[0])
        self.regression = self.data.kind != "qa" and self.data.labels is None
        # the dense reference of the constraint: each example at its own length, or the padded length
        self.reference = cfg.padded_length if cfg.convention == "padded" else None
        self._check_reachable()
        # the scoring spec travels in every plan: saved with the model, a reload scores the same way; the teacher
        # scores like the student, so the attention target ranks the way the student is asked to
        self.scoring = self.scorer.spec(cfg)
        num_layers = config_.num_hidden_layers
        start = pruning_state(self.student)  # a pruned start (--init-from): its plan, before it is reset below
        self.init_plan = copy.deepcopy(start.plan) if start is not None else None
        self.teacher_state = apply_pruning(self.teacher, PruningPlan.keep_all(num_layers, scoring=self.scoring))
        # the attention target needs the teacher's last attention; the answer target only its logits
        self.teacher_state.score_layers = self.target.teacher_score_layers(num_layers)
        self.state = apply_pruning(self.student, PruningPlan.keep_all(num_layers, scoring=self.scoring))
        ranks = (cfg.ranking and self.source.learned) or self.ranks_on_fixed_plan()
        self.state.score_layers = set(self.rank_layers) if ranks else set()
        self.fixed_plan = self.source.fixed_plan(self)
        if self.fixed_plan is not None:
            self.state.set_plan(self.fixed_plan)  # once: evaluation re-sets the same plan
        self.undo_qat = fake_int8(self.student) if cfg.qat and self.fixed_plan is not None else None
        self.gates = HardConcreteGates(
            len(self.layers),
            cfg.num_bins,
            gate_init=cfg.gate_init,
            monotone=cfg.monotone,
            use_layer_gates=cfg.layer_gates,
        ).to(self.device)
        # the ramp's start, from the initial masks (before any checkpoint is loaded: a resumed run ramps the same)
        self.ramp_start = self._initial_sparsity() if cfg.ramp_start == "initial" else 0.0
        self.lambdas = torch.nn.Parameter(torch.zeros(2, device=self.device))
        for name, param in self.student.named_parameters():  # embeddings frozen, as the authors do
            param.requires_grad_("embeddings" not in name)
        self.steps_per_epoch, self.total_steps = training_steps(
            len(self.data.train), cfg.batch_size * self.accelerator.num_processes, cfg.epochs
        )
        self.warmup_steps = max(1, int(self.steps_per_epoch * cfg.warmup_epochs))
        self.hard_start = self._hard_start()
        self.opt = torch.optim.AdamW([p for p in self.student.parameters() if p.requires_grad], lr=cfg.lr)
        # the student stays reachable unwrapped (its pruning state, evaluation, saving); training goes through DDP
        self.student_ddp, self.opt = self.accelerator.prepare(self.student, self.opt)
        self.schedule = get_linear_schedule_with_warmup(self.opt, 0, self.total_steps)
        self.gate_opt = torch.optim.AdamW(self.gates.parameters(), lr=cfg.gate_lr, weight_decay=0.0)
        self.lambda_opt = torch.optim.AdamW([self.lambdas], lr=cfg.lambda_lr, weight_decay=0.0)
        self.sampler = torch.Generator().manual_seed(cfg.seed)
        self.step, self.best, self.step_seconds = 0, None, []
        self.best_kept = None  # the kept model's tokens per layer on dev (evaluate_kept_on_dev)
        self.kept = None  # in memory: (weights, plan) of the best checkpoint so far
        self.plan: PruningPlan | None = None  # the kept plan, after fit()

    # -- checks (one-line errors) -------------------------------------------------------------------------------
    def check_teacher(self) -> None:
        name = self.teacher_name
        if self.data.kind == "embedding":  # the teacher is the dense embedding model itself: no head to check
            check_max_length(self.teacher.config, self.cfg.max_length, name)
        elif self.teacher.config.num_labels != self.data.num_labels:
            raise ToPruneError(
                f"{name} has {self.teacher.config.num_labels} labels but task "
                f"{self.data.name} has {self.data.num_labels}: fine-tune a teacher on this task first"
            )
        if self.data.kind != "embedding":
            check_qa_head(self.teacher, name, self.data)
            check_trained(self.teacher, name)
            check_max_length(self.teacher.config, self.cfg.max_length, name)
        if self.data.kind == "classification":
            check_label_names(self.teacher.config, name, self.data.labels, self.data.name)
        if pruning_state(self.teacher) is not None and pruning_state(self.teacher).plan.kept_bins:
            raise ToPruneError(f"{name} is already pruned: start from the dense teacher")

    def reachable_floor(self) -> float:
        """The smallest relative cost any plan reaches (every token but CLS dropped from the first pruning layer), on
        the training and the selection lengths alike: a kept plan must meet the target on both."""
        return max(min_relative_macs(self.cost, self.layers, n, self.reference) for n in self.split_lengths)

    def _check_reachable(self) -> None:
        floor = self.reachable_floor()
        self.log(
            f"constraint: {describe(self.cost)}; at most {1 / floor:.2f}x is reachable on this data "
            f"(every token but CLS dropped from layer {self.layers[0]})"
        )
        if self.target_rel <= floor:
            raise ToPruneError(
                f"unreachable target {self.cfg.target} ({describe(self.cost)}, {self.cfg.convention})"
                f": with layers before {self.layers[0]} dense, at most {1 / floor:.2f}x is possible "
                "on this data"
            )

    @torch.no_grad()
    def _initial_sparsity(self) -> float:
        """Expected cost sparsity of the current (initial) masks on the training lengths, capped at the target's."""
        lengths = torch.tensor(self.split_lengths[0], device=self.device)
        rel = self.expected_relative_cost(lengths)
        return min(max(0.0, 1.0 - float(rel)), 1.0 - self.target_rel)

    @functools.cached_property
    def split_lengths(self) -> list[list[int]]:
        """Token lengths of the train and the selection examples: fixed and fitted plans must meet the target on both
        (read once: fitted plans are made at every evaluation). Dev lengths are used only when dev is the selection
        set (the paper's convention)."""
        return [[len(x) for x in split["input_ids"]] for split in (self.data.train, self.data.select_set)]

    @property
    def selection_lengths(self) -> list[int]:
        return self.split_lengths[1]

    def _hard_start(self) -> int | None:
        """First step of the hard phase (None: no hard phase). It starts after the warm-up: the plan it freezes
        must already be at the target."""
        cfg = self.cfg
        if cfg.hard_epochs <= 0 or not self.source.learned:
            return None
        if cfg.hard_epochs > cfg.epochs - cfg.warmup_epochs:
            raise ToPruneError(
                f"--hard-epochs {cfg.hard_epochs:g} must fit after the warm-up: at most "
                f"{cfg.epochs - cfg.warmup_epochs:g} with --epochs {cfg.epochs:g} and "
                f"--warmup-epochs {cfg.warmup_epochs:g}"
            )
        return self.total_steps - int(self.steps_per_epoch * cfg.hard_epochs)

    def ranks_on_fixed_plan(self) -> bool:
        """[ours] The answer ranking keeps training under a fixed plan (static, or ToP's hard phase): there the ranking
        alone decides which tokens go, and QA accuracy hangs on the answer's survival (benchmarks/README.md §6)."""
        return self.cfg.ranking and self.target.under_fixed_plan and self.source.ranks_fixed

    # -- evaluation and the kept checkpoint ---------------------------------------------------------------------
    def evaluate(self) -> dict:
        """The current plan on the selection set; the best one meeting the target is kept (:meth:`keep`)."""
        plan = self.current_plan()
        self.state.set_plan(plan)
        draws = self.plan_scorer.evaluation_draws(self.cfg.seed)  # random plans: the same draws every time
        if draws is not None:
            self.state.random_scores = draws
        loader = make_loader(self.data.select_set, self.tokenizer, 64, False)
        result = evaluate(self.student, loader, self.data.on_selection(), self.cfg.padded_length)
        self.constraint.judge(result, plan, self)
        result["keep_ratio_per_layer"] = [round(plan.keep_ratio(layer), 3) for layer in range(self.dims.num_layers)]
        if result["meets_target"] and (self.best is None or result["metric"] > self.best["metric"]):
            self.best = dict(result, step=self.step)
            plan.meta = {
                **plan.meta,
                "method": self.source.method_label(self),
                **({"qat": "onnxruntime dynamic INT8, per channel (selection simulated it)"} if self.cfg.qat else {}),
                "task": self.data.name,
                "target": self.cfg.target,
                "convention": self.cfg.convention,
                "step": self.step,
                "selection_metric": result["metric"],
                "flops_reduction_unpadded": result["flops_reduction_unpadded"],
                "flops_reduction_padded": result["flops_reduction_padded"],
            }
            if self.accelerator.is_main_process:
                check_finite_weights(self.student, "the student", DIVERGED)  # a diverged model is never kept
                self.keep(plan)
        return result

    def keep(self, plan: PruningPlan) -> None:
        """Keep the current weights and ``plan`` as the best checkpoint (here: a copy in memory)."""
        weights = {k: v.detach().to("cpu", copy=True) for k, v in self.student.state_dict().items()}
        self.kept = (weights, copy.deepcopy(plan))

    def kept_model(self):
        """The kept checkpoint as a model with its plan applied: the student itself, its training over."""
        weights, plan = self.kept
        self.student.load_state_dict(weights)
        self.state.soft_masks, self.state.score_layers, self.state.random_scores = None, set(), None
        self.state.set_plan(plan)  # a random plan reseeds from its spec, as a reloaded model does
        return self.student

    def save_kept(self, plan: PruningPlan) -> None:
        """Record the final provenance of the kept plan (a run folder also saves it)."""

    def evaluate_kept_on_dev(self) -> dict:
        """The one dev evaluation: the kept model (as saved: float, whatever --qat simulated), recorded in its plan's
        provenance."""
        if self.undo_qat is not None:
            self.undo_qat()
            self.undo_qat = None
        model = self.kept_model()
        loader = make_loader(self.data.dev, self.tokenizer, 64, False)
        result = evaluate(model, loader, self.data, self.cfg.padded_length, return_kept=True)
        self.best_kept = result.pop("kept_fractions", None)  # per dev example and layer: the tokens plot
        plan = pruning_state(model).plan
        plan.meta = {
            **plan.meta,
            "dev_metric": result["metric"],
            "selection": self.data.selection_info.as_dict(),
            "flops_reduction_unpadded": result["flops_reduction_unpadded"],
            "flops_reduction_padded": result["flops_reduction_padded"],
        }
        self.plan, self.model = plan, model
        if self.accelerator.is_main_process:
            self.save_kept(plan)
        return result
