"""A pruning run in a folder (what ``toprune prune`` does): the teacher, its tokenizer and the task data loaded from
folders into a :class:`toprune.pruner.Pruner`, which trains; the kept model is written to ``OUTPUT/best`` (weights,
plan, task), the run is checkpointed every ``save_every`` steps (``resume=True`` continues it to the same result), and
the evaluations go to ``metrics.jsonl``, the numbers to ``summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from accelerate import Accelerator

from .embedding import attach_teacher_embeddings, read_pooling, save_sentence_transformer
from .errors import ToPruneError
from .flops import parse_target
from .losses import distillation_loss, lagrangian
from .pretrained import load_model, load_tokenizer, resolve_model, save_pruned
from .prune_config import PruneConfig, check_config
from .pruner import Pruner
from .report import finish_run
from .run_state import Checkpointed
from .runtime import pruning_state
from .runfolder import check_run_folder, clear_run, make_folder
from .safeio import atomic_write_text, run_lock
from .task_spec import task_spec, write_task
from .train import KNOWN_TASKS, TaskData, prepare_data, seed_everything
from .validate import check_same_task

__all__ = ["PruneConfig", "ToPRun", "distillation_loss", "lagrangian", "load_inputs"]  # losses live in their module


def load_inputs(cfg: PruneConfig, accelerator: Accelerator, log=print):
    """(student, teacher, tokenizer, data) of ``cfg``'s folders: the teacher folder (also the student's start) and
    the task's data (GLUE, SQuAD, the user's files or embedding text)."""
    if not cfg.teacher:
        raise ToPruneError("a pruning run needs a teacher folder (--teacher)")
    tokenizer = load_tokenizer(cfg.teacher)
    # datasets caches the parsed files and the tokenised splits on disk: one process writes, the others read
    with accelerator.main_process_first():
        data: TaskData = prepare_data(
            tokenizer,
            cfg.task,
            cfg.data_dir,
            cfg.max_length,
            cfg.max_train_samples,
            cfg.seed,
            train_file=cfg.train_file,
            validation_file=cfg.validation_file,
            text_columns=cfg.text_columns,
            label_column=cfg.label_column,
            select_on=cfg.select_on,
            task_type=cfg.task_type,
        )
    from .strategies import SCORERS

    SCORERS[cfg.scorer]().check(data)  # before the models load
    if Path(cfg.teacher, "toprune_plan.json").exists():
        raise ToPruneError(f"teacher {cfg.teacher} is already pruned: start from the dense teacher")
    teacher = load_model(cfg.teacher, data.auto_class).to(accelerator.device)
    student = load_model(cfg.init_from or cfg.teacher, data.auto_class).to(accelerator.device)
    if cfg.init_from:
        check_pruned_start(student, teacher, cfg.init_from)
    check_same_task(resolve_model(cfg.teacher), f"teacher {cfg.teacher}", data.name, KNOWN_TASKS)
    if data.kind == "embedding":  # pooled as the model's sentence-transformers config says
        data.embedding = read_pooling(resolve_model(cfg.teacher), cfg.pooling_tokens, cfg.embedding_loss)
        attach_teacher_embeddings(data, teacher, tokenizer)
    return student, teacher, tokenizer, data


def check_pruned_start(student, teacher, folder) -> None:
    """--init-from: a pruned model of the teacher's shape (its weights and plan are the run's start)."""
    if pruning_state(student) is None:
        raise ToPruneError(f"--init-from {folder} is not a pruned model (no toprune_plan.json): use a run's best/")
    shape = ("num_hidden_layers", "hidden_size", "num_attention_heads")
    if any(getattr(student.config, k, None) != getattr(teacher.config, k, None) for k in shape):
        raise ToPruneError(f"--init-from {folder} does not have the teacher's shape (layers, width, heads)")


class ToPRun(Checkpointed, Pruner):
    """One pruning run in ``cfg.output_dir``; ``run()`` trains, evaluates, checkpoints, and returns the kept
    checkpoint's numbers."""

    def __init__(self, cfg: PruneConfig, log=print) -> None:
        self.out = Path(cfg.output_dir or "")
        parse_target(cfg.target)  # cheap checks first: fail before loading anything
        check_config(cfg)
        if not cfg.output_dir:
            raise ToPruneError("a pruning run needs an output folder (--output)")
        check_run_folder(self.out, cfg.resume, cfg.overwrite)
        seed_everything(cfg.seed)
        accelerator = Accelerator()
        student, teacher, tokenizer, data = load_inputs(cfg, accelerator, log)
        super().__init__(student, teacher, tokenizer, data, cfg, log, accelerator, reseed=False)

    def keep(self, plan) -> None:
        """The kept checkpoint goes to ``best/``: a model folder `toprune eval` and `load_model` read."""
        if self.data.kind == "embedding":  # a folder sentence-transformers loads
            save_sentence_transformer(
                self.student, self.out / "best", self.tokenizer, self.data.embedding, resolve_model(self.cfg.teacher)
            )
        else:
            save_pruned(self.student, self.out / "best", self.tokenizer)
            write_task(self.out / "best", task_spec(self.data, self.cfg.max_length))

    def kept_model(self):
        """The kept model as saved (weights and plan reloaded from ``best/``; a random plan reseeds from its spec)."""
        return load_model(self.out / "best", self.data.auto_class).to(self.device)

    def save_kept(self, plan) -> None:
        plan.save(self.out / "best")

    def on_evaluated(self, record: dict) -> None:
        self._log_line(record)

    def on_step_end(self, last: int) -> None:
        if self.step % self.cfg.save_every == 0 or self.step == last:
            self.save_checkpoint()

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
        summary = self.fit()
        summary.update(finish_run(self, self.setup, self.eta.estimate))  # + the kept model's tokens plot
        if self.accelerator.is_main_process:
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=1) + "\n")
        if self.best is None:
            self.log("no evaluated checkpoint met the target: train longer or relax the target")
        else:
            dev = summary["dev"]
            self.log(
                f"kept step {self.best['step']} ({self.data.selection_info.describe()}): {self.data.metric} "
                f"{self.best['metric']:.2f} on the selection set; dev {dev['metric']:.2f}, FLOPs reduction on dev "
                f"{dev['flops_reduction_unpadded']:.2f}x unpadded / {dev['flops_reduction_padded']:.2f}x padded "
                f"to {self.cfg.padded_length}"
            )
        return summary
