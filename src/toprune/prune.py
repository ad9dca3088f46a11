"""The ToP pruning run (METHOD.md §1, §3, §5, §6): from a fine-tuned dense teacher to a pruned model at a FLOPs target.

Loss = logit distillation from the teacher (T^2 KL at temperature T; MSE on labels for regression)
     + ranking distillation (teacher's final-layer top-k into early student score layers, weight decaying)
     + Lagrangian lambda1 (s - t) + lambda2 (s - t)^2 on the expected FLOPs sparsity s, target t ramped up.
Weights, gate logits and multipliers have their own learning rates; the multipliers do gradient *ascent*.
Every ``eval_every`` steps the deterministic plan is evaluated on the selection set (a held-out slice of the training
data, :mod:`toprune.selection`) with its real FLOPs measured on the inference path; the best checkpoint whose
measured reduction meets the target is kept, and the dev set is evaluated once, on it, at the end.
A run is checkpointed every ``save_every`` steps and ``resume=True`` continues it to the same result.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .constraint import constraint_cost, describe
from .embedding import attach_teacher_embeddings, distill_embedding, read_pooling, save_sentence_transformer
from .errors import ToPruneError
from .flops import EncoderDims, expected_relative_macs, min_relative_macs, parse_target
from .gates import HardConcreteGates
from .losses import distillation_loss, lagrangian
from .plan import PruningPlan
from .pretrained import load_model, load_tokenizer, resolve_model, save_pruned
from .prune_config import PruneConfig, check_config, resolve_layers
from .qa import answer_region
from .ranking import answer_labels, ranking_distillation_loss, ranking_labels
from .runfolder import check_run_folder, clear_run, make_folder
from .report import WallTimeEstimate, finish_run, prune_setup, setup_lines
from .runtime import SoftMasks, apply_pruning, pruning_state
from .safeio import atomic_write_text, run_lock
from .run_state import Checkpointed
from .static import fit_plan, plan_relative_macs, static_plan
from .task_spec import task_spec, write_task
from .train import (KNOWN_TASKS, TaskData, check_qa_head, evaluate, head_logits, make_loader, prepare_data,
                    seed_everything, split_targets)
from .validate import (check_finite_loss, check_finite_weights, check_label_names, check_max_length,
                       check_same_task, check_trained)

__all__ = ["PruneConfig", "ToPRun", "distillation_loss", "lagrangian"]  # config and losses live in their modules
_DIVERGED = "the run stopped; the kept model (if any) predates it; lower --lr, --gate-lr or --lambda-lr"


class ToPRun(Checkpointed):
    """One pruning run; ``run()`` trains, evaluates, checkpoints, and returns the kept checkpoint's numbers."""

    def __init__(self, cfg: PruneConfig, log=print) -> None:
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.output_dir)
        self.target_rel = parse_target(cfg.target)  # cheap checks first: fail before loading anything
        check_config(cfg)
        check_run_folder(self.out, cfg.resume, cfg.overwrite)
        seed_everything(cfg.seed)
        # one process: a no-op wrapper; under `accelerate launch`: DDP for the student, sharded batches
        self.accelerator = Accelerator()
        self.device = self.accelerator.device
        self.tokenizer = load_tokenizer(cfg.teacher)
        # datasets caches the parsed files and the tokenised splits on disk: one process writes, the others read
        with self.accelerator.main_process_first():
            self.data: TaskData = prepare_data(self.tokenizer, cfg.task, cfg.data_dir, cfg.max_length,
                                               cfg.max_train_samples, cfg.seed, train_file=cfg.train_file,
                                               validation_file=cfg.validation_file, text_columns=cfg.text_columns,
                                               label_column=cfg.label_column, select_on=cfg.select_on,
                                               task_type=cfg.task_type)
        if cfg.scorer == "question" and "token_type_ids" not in self.data.dev.column_names:
            raise ToPruneError("--scorer question needs token_type_ids to find the question's rows; this tokenizer "
                               "does not make them (RoBERTa, XLM-R, DistilBERT): use the attention scorer")
        self.teacher = load_model(cfg.teacher, self.data.auto_class).to(self.device)
        self.student = load_model(cfg.teacher, self.data.auto_class).to(self.device)
        self._check_teacher()
        if self.data.kind == "embedding":  # pooled as the model's sentence-transformers config says
            self.data.embedding = read_pooling(resolve_model(cfg.teacher), cfg.pooling_tokens, cfg.embedding_loss)
            attach_teacher_embeddings(self.data, self.teacher, self.tokenizer)
        config = self.student.config
        self.dims = EncoderDims.from_config(config)
        # what the constraint counts: MACs (self.dims) or measured milliseconds; FLOPs are reported either way
        threads = cfg.inference_threads or torch.get_num_threads()
        self.cost = constraint_cost(cfg.constraint, self.teacher, backend=cfg.inference_backend,
                                    batch_size=cfg.inference_batch_size, threads=threads,
                                    profile_path=cfg.latency_profile, log=log)
        self.regression = self.data.kind != "qa" and self.data.labels is None
        self.layers, self.rank_layers = resolve_layers(cfg, config.num_hidden_layers)
        # the dense reference of the constraint: each example at its own length, or the padded length
        self.reference = cfg.padded_length if cfg.convention == "padded" else None
        self._check_reachable()
        # the scorer travels in every plan's meta: saved with the model, a reload scores the same way; the teacher
        # scores like the student, so the attention target ranks the way the student is asked to
        self.plan_meta = {"scorer": cfg.scorer} if cfg.scorer != "attention" else {}
        if cfg.score_radius:
            self.plan_meta["score_radius"] = cfg.score_radius
        self.teacher_state = apply_pruning(self.teacher, PruningPlan.keep_all(config.num_hidden_layers, self.plan_meta))
        # the attention target needs the teacher's last attention; the answer target only its logits
        self.teacher_state.score_layers = {config.num_hidden_layers - 1} if cfg.rank_target == "attention" else set()
        self.state = apply_pruning(self.student, PruningPlan.keep_all(config.num_hidden_layers, self.plan_meta))
        self.state.score_layers = set(self.rank_layers) if (
            cfg.ranking and cfg.method == "top") or self._ranks_on_fixed_plan() else set()
        self.fixed_plan = None if cfg.method == "top" else self._static_plan()
        if self.fixed_plan is not None:
            self.state.set_plan(self.fixed_plan)  # once: evaluation re-sets the same plan
        self.gates = HardConcreteGates(len(self.layers), cfg.num_bins, monotone=cfg.monotone,
                                       use_layer_gates=cfg.layer_gates).to(self.device)
        self.lambdas = torch.nn.Parameter(torch.zeros(2, device=self.device))
        for name, param in self.student.named_parameters():  # embeddings frozen, as the authors do
            param.requires_grad_("embeddings" not in name)
        self.steps_per_epoch = -(-len(self.data.train) // (cfg.batch_size * self.accelerator.num_processes))
        self.total_steps = int(self.steps_per_epoch * cfg.epochs)
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

    # -- checks (one-line errors) -------------------------------------------------------------------------------
    def _check_teacher(self) -> None:
        if self.data.kind == "embedding":  # the teacher is the dense embedding model itself: no head to check
            check_max_length(self.teacher.config, self.cfg.max_length, f"teacher {self.cfg.teacher}")
        elif self.teacher.config.num_labels != self.data.num_labels:
            raise ToPruneError(f"teacher {self.cfg.teacher} has {self.teacher.config.num_labels} labels but task "
                               f"{self.data.name} has {self.data.num_labels}: fine-tune a teacher on this task first")
        if self.data.kind != "embedding":
            check_qa_head(self.teacher, f"teacher {self.cfg.teacher}", self.data)
            check_trained(self.teacher, f"teacher {self.cfg.teacher}")
            check_max_length(self.teacher.config, self.cfg.max_length, f"teacher {self.cfg.teacher}")
        if self.data.kind == "classification":
            check_label_names(self.teacher.config, f"teacher {self.cfg.teacher}", self.data.labels, self.data.name)
        check_same_task(resolve_model(self.cfg.teacher), f"teacher {self.cfg.teacher}", self.data.name, KNOWN_TASKS)
        if Path(self.cfg.teacher, "toprune_plan.json").exists():
            raise ToPruneError(f"teacher {self.cfg.teacher} is already pruned: start from the dense teacher")

    def _check_reachable(self) -> None:
        lengths = torch.tensor(self._split_lengths[0])  # the train lengths, read once for every plan search
        floor = min_relative_macs(self.cost, self.layers, lengths, self.reference)
        self.log(f"constraint: {describe(self.cost)}; at most {1 / floor:.2f}x is reachable on this data "
                 f"(every token but CLS dropped from layer {self.layers[0]})")
        if self.target_rel <= floor:
            raise ToPruneError(f"unreachable target {self.cfg.target} ({describe(self.cost)}, {self.cfg.convention})"
                               f": with layers before {self.layers[0]} dense, at most {1 / floor:.2f}x is possible "
                               "on this data")

    @functools.cached_property
    def _split_lengths(self) -> list[list[int]]:
        """Token lengths of the train and the selection examples: fixed and fitted plans must meet the target on both
        (read once: fitted plans are made at every evaluation). Dev lengths are used only when dev is the selection
        set (the paper's convention)."""
        return [[len(x) for x in split["input_ids"]] for split in (self.data.train, self.data.select_set)]

    def _hard_phase_due(self) -> bool:
        return self.hard_start is not None and self.step >= self.hard_start

    def _static_plan(self) -> PruningPlan:
        """The baselines' fixed schedule: meets the target on the train and the dev lengths (lengths only)."""
        lengths = self._split_lengths
        scorer = "random" if self.cfg.method == "random" else self.cfg.scorer
        plan = static_plan(self.cost, self.layers, lengths, self.target_rel, self.reference, scorer)
        if scorer == "random":
            plan.meta["random_seed"] = self.cfg.seed  # evaluation draws from this seed; so does a reloaded model
        elif self.cfg.score_radius:
            plan.meta["score_radius"] = self.cfg.score_radius
        return plan

    def _hard_start(self) -> int | None:
        """First step of the hard phase (None: no hard phase). It starts after the warm-up: the plan it freezes
        must already be at the target."""
        cfg = self.cfg
        if cfg.hard_epochs <= 0 or cfg.method != "top":
            return None
        if cfg.hard_epochs > cfg.epochs - cfg.warmup_epochs:
            raise ToPruneError(f"--hard-epochs {cfg.hard_epochs:g} must fit after the warm-up: at most "
                               f"{cfg.epochs - cfg.warmup_epochs:g} with --epochs {cfg.epochs:g} and "
                               f"--warmup-epochs {cfg.warmup_epochs:g}")
        return self.total_steps - int(self.steps_per_epoch * cfg.hard_epochs)

    def freeze_plan(self) -> None:
        """Enter the hard phase: the deterministic plan of the current gates becomes fixed, and training continues
        on the gather path, as inference runs. The soft path keeps partly masked tokens alive (METHOD.md §8.4);
        for token-level heads (QA) that mismatch costs most. Gates and multipliers stop changing, so a resumed run
        freezes the very same plan."""
        self.fixed_plan = self.fitted_plan()
        self.fixed_plan.meta = {**self.fixed_plan.meta, "frozen_at_step": self.hard_start}
        self.state.soft_masks = None
        if not self._ranks_on_fixed_plan():
            self.state.score_layers = set()
        self.teacher_state.score_layers = set()  # no attention target any more: the teacher runs plain SDPA
        self.state.set_plan(self.fixed_plan)

    def rounded_plan(self) -> PruningPlan:
        """The authors' deterministic masks (METHOD.md §4): per layer, the round(K - sum P(z>0)) lowest-logit bins
        dropped; the layer prunes iff P(gate > 0) >= 0.5."""
        kept, on = self.gates.deterministic()
        return PruningPlan.from_masks(self.dims.num_layers, self.layers, kept, on, self.plan_meta)

    def fitted_plan(self) -> PruningPlan:
        """The rounded masks fitted to the budget on the train and dev token counts (see :func:`fit_plan`)."""
        kept, on = (x.cpu() for x in self.gates.deterministic())
        plan = fit_plan(self.cost, self.layers, kept, on, self.gates.bin_log_alpha.detach().cpu(),
                        self._split_lengths, self.target_rel, self.reference, self.cfg.monotone, self.plan_meta)
        plan.meta = {**plan.meta, "fitted": True}
        return plan

    # -- training -----------------------------------------------------------------------------------------------
    def _distill(self, batch: dict, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """The KD loss and the teacher's logits (the answer ranking target is made from them)."""
        if self.data.kind == "embedding":  # the pooled sentence embedding against the dense teacher's
            return distill_embedding(self.student_ddp, self.teacher, batch, self.data.embedding, self.state)
        logits = head_logits(self.student_ddp(**batch))
        with torch.no_grad():
            teacher_logits = head_logits(self.teacher(**batch))
        return distillation_loss(logits, teacher_logits, labels, self.regression, self.cfg.temperature,
                                 batch["attention_mask"]), teacher_logits

    def _ranks_on_fixed_plan(self) -> bool:
        """[ours] The answer ranking keeps training under a fixed plan (static, or ToP's hard phase): there the ranking
        alone decides which tokens go, and QA accuracy hangs on the answer's survival (benchmarks/README.md §6)."""
        return self.cfg.ranking and self.cfg.rank_target == "answer" and self.cfg.method != "random"

    def _ranking_loss(self, batch: dict, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Ranking distillation summed over the rank layers (unweighted). Positions a layer never scored (pruned
        before it) take no part: their labels are zeroed."""
        cfg, last = self.cfg, self.state.last
        valid = batch["attention_mask"].bool()
        per_pair = cfg.rank_target == "answer"
        if per_pair:
            targets = answer_labels(teacher_logits, valid, cfg.topk, answer_region(batch, valid))
        else:
            targets = ranking_labels(self.teacher_state.last.scores[self.dims.num_layers - 1], valid, cfg.topk)
        return sum(ranking_distillation_loss(last.scores[layer], targets * last.scored[layer], cfg.topk, per_pair)
                   for layer in self.rank_layers)

    def fixed_plan_step(self, batch: dict, labels) -> dict:
        """A baseline's step (and ToP's hard phase): the fixed plan on the real (gather) path, distilled from the
        teacher like ToP; with the answer target, the ranking too (constant weight: the plan no longer moves)."""
        self.state.random_scores = self.sampler if self.cfg.method == "random" else None  # evaluation swaps it
        loss_task, teacher_logits = self._distill(batch, labels)
        loss_rank = torch.zeros((), device=self.device)
        if self._ranks_on_fixed_plan():
            loss_rank = self.cfg.rank_alpha * self._ranking_loss(batch, teacher_logits)
        loss = loss_task + loss_rank
        self.opt.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.opt.step()
        self.schedule.step()
        return {"loss": loss.item(), "task": loss_task.item(), "rank": loss_rank.item(), "lag": 0.0,
                "expected_sparsity": 1.0 - plan_relative_macs(self.cost, self.fixed_plan,
                                                                   batch["attention_mask"].sum(dim=1).tolist(),
                                                                   self.reference),
                "target_sparsity": 1.0 - self.target_rel, "lambda1": 0.0, "lambda2": 0.0}

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
        rel = expected_relative_macs(self.cost, self.gates.expected_keep_ratios(), self.layers, lengths,
                                     self.reference)
        target_sparsity = (1.0 - self.target_rel) * progress
        loss_lag = lagrangian(1.0 - rel, target_sparsity, self.lambdas)
        loss = loss_task + loss_rank + loss_lag
        for opt in (self.opt, self.gate_opt, self.lambda_opt):
            opt.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if self.accelerator.num_processes > 1:  # gates and multipliers live outside DDP: average them by hand
            for param in (*self.gates.parameters(), self.lambdas):
                param.grad = self.accelerator.reduce(param.grad, reduction="mean")
        self.lambdas.grad.neg_()  # gradient ascent on the multipliers
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        for opt in (self.opt, self.gate_opt, self.lambda_opt):
            opt.step()
        self.schedule.step()
        self.gates.clamp_()
        self.step_seconds.append(time.perf_counter() - started)
        loss, loss_task, loss_rank, loss_lag = (x.detach() for x in (loss, loss_task, loss_rank, loss_lag))
        return {"loss": loss.item(), "task": loss_task.item(), "rank": loss_rank.item(), "lag": loss_lag.item(),
                "expected_sparsity": 1.0 - rel.item(), "target_sparsity": target_sparsity,
                "lambda1": self.lambdas[0].item(), "lambda2": self.lambdas[1].item()}

    def current_plan(self) -> PruningPlan:
        if self.fixed_plan is not None:
            return self.fixed_plan
        return self.fitted_plan() if self.cfg.fit_plan else self.rounded_plan()

    def evaluate(self) -> dict:
        plan = self.current_plan()
        self.state.set_plan(plan)
        if self.cfg.method == "random":  # the same random draws at every evaluation
            self.state.random_scores = torch.Generator().manual_seed(self.cfg.seed)
        loader = make_loader(self.data.select_set, self.tokenizer, 64, False)
        result = evaluate(self.student, loader, self.data, self.cfg.padded_length)
        if self.cfg.constraint == "latency":  # the plan's predicted speed-up on the selection lengths
            rel = plan_relative_macs(self.cost, plan, self._split_lengths[1], self.reference)
            result["predicted_speedup"] = 1.0 / rel
            result["meets_target"] = rel <= self.target_rel + 1e-9
        else:
            key = "flops_reduction_padded" if self.cfg.convention == "padded" else "flops_reduction_unpadded"
            result["meets_target"] = result[key] >= 1.0 / self.target_rel
        result["keep_ratio_per_layer"] = [round(plan.keep_ratio(layer), 3) for layer in range(self.dims.num_layers)]
        if result["meets_target"] and (self.best is None or result["metric"] > self.best["metric"]):
            self.best = dict(result, step=self.step)
            plan.meta = {**plan.meta, "method": self.cfg.method, "task": self.data.name, "target": self.cfg.target,
                         "convention": self.cfg.convention, "step": self.step, "selection_metric": result["metric"],
                         "flops_reduction_unpadded": result["flops_reduction_unpadded"],
                         "flops_reduction_padded": result["flops_reduction_padded"]}
            if self.accelerator.is_main_process:
                check_finite_weights(self.student, "the student", _DIVERGED)  # a diverged model is never kept
                if self.data.kind == "embedding":  # a folder sentence-transformers loads
                    save_sentence_transformer(self.student, self.out / "best", self.tokenizer, self.data.embedding,
                                              resolve_model(self.cfg.teacher))
                else:
                    save_pruned(self.student, self.out / "best", self.tokenizer)
                    write_task(self.out / "best", task_spec(self.data, self.cfg.max_length))
        return result

    def evaluate_kept_on_dev(self) -> dict:
        """The one dev evaluation: the kept model as saved (weights and plan reloaded from ``best/``), recorded in
        its plan's provenance."""
        # a random plan reseeds from its meta, as in the run
        model = load_model(self.out / "best", self.data.auto_class).to(self.device)
        loader = make_loader(self.data.dev, self.tokenizer, 64, False)
        result = evaluate(model, loader, self.data, self.cfg.padded_length, return_kept=True)
        self.best_kept = result.pop("kept_fractions", None)  # per dev example and layer: the tokens plot
        plan = pruning_state(model).plan
        plan.meta = {**plan.meta, "dev_metric": result["metric"], "selection": self.data.selection_info.as_dict(),
                     "flops_reduction_unpadded": result["flops_reduction_unpadded"],
                     "flops_reduction_padded": result["flops_reduction_padded"]}
        if self.accelerator.is_main_process:
            plan.save(self.out / "best")
        return result

    def run(self) -> dict:
        make_folder(self.out)
        with run_lock(self.out, self.accelerator.is_main_process):  # a second run into this folder refuses
            return self._run()

    def _run(self) -> dict:
        if self.cfg.resume and (self.out / "checkpoint.pt").exists():
            self.load_checkpoint()
            self.log(f"resumed from step {self.step}")
        elif self.accelerator.is_main_process:  # a fresh start (allowed by check_run_folder): no stale state
            clear_run(self.out)
        self.accelerator.wait_for_everyone()
        last = min(self.total_steps, self.cfg.max_steps or self.total_steps)
        setup = prune_setup(self)
        for line in setup_lines(setup):
            self.log(line)
        eta = WallTimeEstimate(last, self.log, done=self.step,
                               extra=f", plus an evaluation every {self.cfg.eval_every} steps")
        bar = tqdm(total=last, initial=self.step, desc=f"ToP {self.data.name} -> {self.cfg.target}",
                   disable=not self.accelerator.is_main_process)
        while self.step < last:
            epoch, skip = divmod(self.step, self.steps_per_epoch)
            loader = make_loader(self.data.train, self.tokenizer, self.cfg.batch_size, True, self.cfg.seed, epoch,
                                 group_by_length=self.data.kind == "qa")
            loader = self.accelerator.prepare(loader)  # each process its own share of every epoch's batches
            for batch in itertools.islice(loader, skip, None):
                stats = self.train_step(batch)
                self.step += 1
                check_finite_loss(stats["loss"], self.step, _DIVERGED)
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}", sparsity=f"{stats['expected_sparsity']:.2f}",
                                target=f"{stats['target_sparsity']:.2f}", lam1=f"{stats['lambda1']:.2f}")
                eta.step()
                if self.step % self.cfg.eval_every == 0 or self.step == last:
                    result = self.evaluate()
                    self._log_line({"step": self.step, **stats, **{f"sel_{k}": v for k, v in result.items()}})
                if self.step % self.cfg.save_every == 0 or self.step == last:
                    self.save_checkpoint()
                if self.step >= last:
                    break
        bar.close()
        self.accelerator.wait_for_everyone()  # no process leaves while another may still be in a collective
        dev = self.evaluate_kept_on_dev() if self.best is not None else None
        summary = {"task": self.data.name, "target": self.cfg.target, "convention": self.cfg.convention,
                   "steps": self.step, "best": self.best, "dev": dev, "train_examples": len(self.data.train),
                   "selection": self.data.selection_info.as_dict(),
                   "mean_step_ms": 1000 * sum(self.step_seconds) / max(1, len(self.step_seconds)),
                   "config": asdict(self.cfg)}
        summary.update(finish_run(self, setup, eta.estimate))  # + the kept model's tokens plot
        if self.accelerator.is_main_process:
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=1) + "\n")
        if self.best is None:
            self.log("no evaluated checkpoint met the target: train longer or relax the target")
        else:
            self.log(f"kept step {self.best['step']} ({self.data.selection_info.describe()}): {self.data.metric} "
                     f"{self.best['metric']:.2f} on the selection set; dev {dev['metric']:.2f}, FLOPs reduction on dev "
                     f"{dev['flops_reduction_unpadded']:.2f}x unpadded / {dev['flops_reduction_padded']:.2f}x padded "
                     f"to {self.cfg.padded_length}")
        return summary
