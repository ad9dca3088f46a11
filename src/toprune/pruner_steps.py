"""The training of :class:`toprune.pruner.Pruner`: its two kinds of step (learned gates on the soft path; a fixed
plan on the real path), the deterministic plans of the gates, and the loop that evaluates and keeps checkpoints."""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict

import torch
from tqdm.auto import tqdm

from .embedding import distill_embedding
from .flops import expected_relative_macs
from .qat import fake_int8
from .losses import ascend_multipliers_, distillation_loss, lagrangian
from .plan import PruningPlan
from .ranking import ranking_distillation_loss
from .report import WallTimeEstimate, prune_setup, setup_lines
from .runtime import SoftMasks
from .static import fit_plan, plan_relative_macs
from .train import head_logits, make_loader, split_targets
from .validate import check_finite_loss

_TRACED = ("expected_sparsity", "target_sparsity", "lambda1", "lambda2")  # logged every step
DIVERGED = "the run stopped; the kept model (if any) predates it; lower --lr, --gate-lr or --lambda-lr"


class TrainingSteps:
    """Mixed into :class:`toprune.pruner.Pruner` (uses its models, gates, multipliers, optimisers, strategies)."""

    # -- plans --------------------------------------------------------------------------------------------------
    def _hard_phase_due(self) -> bool:
        return self.hard_start is not None and self.step >= self.hard_start

    def freeze_plan(self) -> None:
        """Enter the hard phase: the deterministic plan of the current gates becomes fixed, and training continues
        on the gather path, as inference runs. The soft path keeps partly masked tokens alive (METHOD.md §8.4);
        for token-level heads (QA) that mismatch costs most. Gates and multipliers stop changing, so a resumed run
        freezes the very same plan."""
        self.fixed_plan = self.fitted_plan()
        self.fixed_plan.meta = {**self.fixed_plan.meta, "frozen_at_step": self.hard_start}
        self.state.soft_masks = None
        if not self.ranks_on_fixed_plan():
            self.state.score_layers = set()
        self.teacher_state.score_layers = set()  # no attention target any more: the teacher runs plain SDPA
        self.state.set_plan(self.fixed_plan)
        if self.cfg.qat and self.undo_qat is None:  # the plan is fixed from here: train for the INT8 graph
            self.undo_qat = fake_int8(self.student)

    def rounded_plan(self) -> PruningPlan:
        """The authors' deterministic masks (METHOD.md §4): per layer, the round(K - sum P(z>0)) lowest-logit bins
        dropped; the layer prunes iff P(gate > 0) >= 0.5."""
        kept, on = self.gates.deterministic()
        return PruningPlan.from_masks(self.dims.num_layers, self.layers, kept, on, scoring=self.scoring)

    def fitted_plan(self) -> PruningPlan:
        """The rounded masks fitted to the budget on the train and dev token counts (see :func:`fit_plan`)."""
        kept, on = (x.cpu() for x in self.gates.deterministic())
        plan = fit_plan(
            self.cost,
            self.layers,
            kept,
            on,
            self.gates.bin_log_alpha.detach().cpu(),
            self.split_lengths,
            self.target_rel,
            self.reference,
            self.cfg.monotone,
            scoring=self.scoring,
        )
        plan.meta = {**plan.meta, "fitted": True}
        return plan

    def current_plan(self) -> PruningPlan:
        if self.fixed_plan is not None:
            return self.fixed_plan
        return self.fitted_plan() if self.cfg.fit_plan else self.rounded_plan()

    # -- losses -------------------------------------------------------------------------------------------------
    def _distill(self, batch: dict, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """The KD loss and the teacher's logits (the answer ranking target is made from them)."""
        if self.data.kind == "embedding":  # the pooled sentence embedding against the dense teacher's
            return distill_embedding(self.student_ddp, self.teacher, batch, self.data.embedding, self.state)
        logits = head_logits(self.student_ddp(**batch))
        with torch.no_grad():
            teacher_logits = head_logits(self.teacher(**batch))
        return distillation_loss(
            logits, teacher_logits, labels, self.regression, self.cfg.temperature, batch["attention_mask"]
        ), teacher_logits

    def _ranking_loss(self, batch: dict, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Ranking distillation summed over the rank layers (unweighted). Positions a layer never scored (pruned
        before it) take no part: their labels are zeroed."""
        last = self.state.last
        valid = batch["attention_mask"].bool()
        targets = self.target.labels(self, batch, teacher_logits, valid)
        return sum(
            ranking_distillation_loss(
                last.scores[layer], targets * last.scored[layer], self.cfg.topk, self.target.per_pair
            )
            for layer in self.rank_layers
        )

    # -- steps --------------------------------------------------------------------------------------------------
    def fixed_plan_step(self, batch: dict, labels) -> dict:
        """A baseline's step (and ToP's hard phase): the fixed plan on the real (gather) path, distilled from the
        teacher like ToP; with the answer target, the ranking too (constant weight: the plan no longer moves)."""
        self.state.random_scores = self.plan_scorer.training_draws(self.sampler)  # evaluation swaps it
        loss_task, teacher_logits = self._distill(batch, labels)
        loss_rank = torch.zeros((), device=self.device)
        if self.ranks_on_fixed_plan():
            loss_rank = self.cfg.rank_alpha * self._ranking_loss(batch, teacher_logits)
        loss = loss_task + loss_rank
        self.opt.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.opt.step()
        self.schedule.step()
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        return {
            "loss": loss.item(),
            "task": loss_task.item(),
            "rank": loss_rank.item(),
            "lag": 0.0,
            "expected_sparsity": 1.0 - plan_relative_macs(self.cost, self.fixed_plan, lengths, self.reference),
            "target_sparsity": 1.0 - self.target_rel,
            "lambda1": 0.0,
            "lambda2": 0.0,
        }

    def expected_relative_cost(self, lengths: torch.Tensor) -> torch.Tensor:
        """The soft plan's expected cost relative to dense on examples of these lengths, differentiable in the gates.
        A latency cost model's pruning overhead is charged by P(layer gate on), without a gradient: with one, the
        cheapest first move from the dense start is to switch the layer gates off (the overhead goes at once, the
        bins have saved nothing yet), which traps the run (measured: benchmarks/README.md, section 8)."""
        prunes = self.gates.keep_probs()[1].detach()
        keep = self.gates.expected_keep_ratios()
        return expected_relative_macs(self.cost, keep, self.layers, lengths, self.reference, prunes)

    def train_step(self, batch: dict) -> dict:
        cfg = self.cfg
        batch, targets = split_targets({k: v.to(self.device) for k, v in batch.items()})
        labels = targets.get("labels")  # regression KD learns from labels; QA and classification from the teacher
        started = time.perf_counter()
        self.student.train()
        if self.fixed_plan is None and self._hard_phase_due():
            self.freeze_plan()
            self.log(f"step {self.step}: plan frozen ({self.fixed_plan.describe()}); hard phase on the real path")
        if self.fixed_plan is not None:
            stats = self.fixed_plan_step(batch, labels)
            self.step_seconds.append(time.perf_counter() - started)
            return stats
        bins, gates = self.gates.sample(self.sampler)
        self.state.soft_masks = SoftMasks(self.layers, bins, gates)
        loss_task, teacher_logits = self._distill(batch, labels)
        progress = min(1.0, self.step / self.warmup_steps)
        loss_rank = torch.zeros((), device=self.device)
        if cfg.ranking:
            loss_rank = cfg.rank_alpha * max(0.01, 1.0 - progress) * self._ranking_loss(batch, teacher_logits)
        lengths = batch["attention_mask"].sum(dim=1)
        rel = self.expected_relative_cost(lengths)
        target_sparsity = self.ramp_start + (1.0 - self.target_rel - self.ramp_start) * progress
        loss_lag = lagrangian(1.0 - rel, target_sparsity, self.lambdas)
        loss = loss_task + loss_rank + loss_lag
        for opt in (self.opt, self.gate_opt, self.lambda_opt):
            opt.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if self.accelerator.num_processes > 1:  # gates and multipliers live outside DDP: average them by hand
            for param in (*self.gates.parameters(), self.lambdas):
                param.grad = self.accelerator.reduce(param.grad, reduction="mean")
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        for opt in (self.opt, self.gate_opt):
            opt.step()
        # the multipliers' gradient, averaged above, is the same in every process: so is their step
        ascend_multipliers_(self.lambdas, self.lambda_opt, cfg.lambda_anti_windup)
        self.schedule.step()
        self.gates.clamp_()
        self.step_seconds.append(time.perf_counter() - started)
        loss, loss_task, loss_rank, loss_lag = (x.detach() for x in (loss, loss_task, loss_rank, loss_lag))
        bin_keep, gate_prob = (x.detach() for x in self.gates.keep_probs())  # gate collapse shows here first
        return {
            "loss": loss.item(),
            "task": loss_task.item(),
            "rank": loss_rank.item(),
            "lag": loss_lag.item(),
            "expected_sparsity": 1.0 - rel.item(),
            "target_sparsity": target_sparsity,
            "lambda1": self.lambdas[0].item(),
            "lambda2": self.lambdas[1].item(),
            "gate_prob": [round(x, 4) for x in gate_prob.tolist()],
            "bin_keep": [round(x, 4) for x in bin_keep.mean(dim=1).tolist()],
        }

    # -- the loop -----------------------------------------------------------------------------------------------
    def on_evaluated(self, record: dict) -> None:
        """After each evaluation (a run folder logs ``record``)."""

    def on_step_end(self, last: int) -> None:
        """After each step (a run folder checkpoints)."""

    def fit(self) -> dict:
        """Train from the current step to the end of the schedule (or ``max_steps``), evaluating every
        ``eval_every`` steps; then the kept checkpoint is evaluated on dev. Returns the run's numbers."""
        cfg = self.cfg
        last = min(self.total_steps, cfg.max_steps or self.total_steps)
        self.setup = prune_setup(self)
        for line in setup_lines(self.setup):
            self.log(line)
        self.eta = WallTimeEstimate(
            last, self.log, done=self.step, extra=f", plus an evaluation every {cfg.eval_every} steps"
        )
        bar = tqdm(
            total=last,
            initial=self.step,
            desc=f"ToP {self.data.name} -> {cfg.target}",
            disable=not self.accelerator.is_main_process,
        )
        trace = []
        while self.step < last:
            epoch, skip = divmod(self.step, self.steps_per_epoch)
            loader = make_loader(
                self.data.train,
                self.tokenizer,
                cfg.batch_size,
                True,
                cfg.seed,
                epoch,
                group_by_length=self.data.kind == "qa",
            )
            loader = self.accelerator.prepare(loader)  # each process its own share of every epoch's batches
            for batch in itertools.islice(loader, skip, None):
                stats = self.train_step(batch)
                self.step += 1
                check_finite_loss(stats["loss"], self.step, DIVERGED)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{stats['loss']:.3f}",
                    sparsity=f"{stats['expected_sparsity']:.2f}",
                    target=f"{stats['target_sparsity']:.2f}",
                    lam1=f"{stats['lambda1']:.2f}",
                )
                self.eta.step()
                # every step's constraint state, logged with the next evaluation: tracking of the ramp and multiplier
                # overshoot happen between evaluations
                trace.append([self.step, *(round(stats[k], 4) for k in _TRACED), stats.get("gate_prob")])
                if self.step % cfg.eval_every == 0 or self.step == last:
                    result = self.evaluate()
                    self.on_evaluated(
                        {
                            "step": self.step,
                            **stats,
                            "trace_fields": ["step", *_TRACED, "gate_prob"],
                            "trace": trace,
                            **{f"sel_{k}": v for k, v in result.items()},
                        }
                    )
                    trace = []
                self.on_step_end(last)
                if self.step >= last:
                    break
        bar.close()
        self.accelerator.wait_for_everyone()  # no process leaves while another may still be in a collective
        dev = self.evaluate_kept_on_dev() if self.best is not None else None
        measured = self.constraint.check_kept(self) if dev is not None and self.accelerator.is_main_process else None
        if measured:
            self.log(measured.pop("line"))
        return {
            "task": self.data.name,
            "target": cfg.target,
            "convention": cfg.convention,
            "steps": self.step,
            "best": self.best,
            "dev": dev,
            "train_examples": len(self.data.train),
            "selection": self.data.selection_info.as_dict(),
            "mean_step_ms": 1000 * sum(self.step_seconds) / max(1, len(self.step_seconds)),
            "config": asdict(cfg),
            **({"latency_check": measured} if measured else {}),
        }
