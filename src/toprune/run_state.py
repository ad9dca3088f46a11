"""Checkpoints and the evaluation log of a pruning run (``ToPRun``'s kill-safe resume): everything that moves during
training is saved every ``save_every`` steps, atomically, and a resumed run continues to the same result."""

from __future__ import annotations

import functools
import json
from dataclasses import MISSING, asdict, fields

import torch

from .errors import ToPruneError
from .prune_config import PruneConfig
from .runfolder import read_checkpoint, read_metrics
from .safeio import atomic_save_file, atomic_write_text


class Checkpointed:
    """Mixed into :class:`toprune.prune.ToPRun`; uses its student, gates, multipliers, optimisers and sampler."""

    def save_checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.num_processes > 1:  # the hand-averaged gate gradients must keep every copy identical
            copies = self.accelerator.gather(self.gates.bin_log_alpha.detach()[None])
            if not torch.allclose(copies[0], copies[-1]):
                raise RuntimeError("gate logits diverged across processes")
        if not self.accelerator.is_main_process:
            return
        blob = {
            "step": self.step,
            "student": self.student.state_dict(),
            "gates": self.gates.state_dict(),
            "lambdas": self.lambdas.detach().clone(),
            "opt": self.opt.state_dict(),
            "gate_opt": self.gate_opt.state_dict(),
            "lambda_opt": self.lambda_opt.state_dict(),
            "schedule": self.schedule.state_dict(),
            "sampler": self.sampler.get_state(),
            "step_seconds": self.step_seconds,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "best": self.best,
            "config": asdict(self.cfg),
        }
        # atomic: a kill or a full disk mid-save keeps the previous checkpoint
        atomic_save_file(self.out / "checkpoint.pt", functools.partial(torch.save, blob))

    def load_checkpoint(self) -> None:
        blob = read_checkpoint(self.out / "checkpoint.pt", self.device)
        ignored = {"resume", "max_steps", "output_dir", "overwrite"}  # a run folder may be moved
        # settings added after a run was saved count as their default
        saved = {**{f.name: f.default for f in fields(PruneConfig) if f.default is not MISSING}, **blob["config"]}
        changed = sorted(k for k, v in asdict(self.cfg).items() if k not in ignored and saved.get(k) != v)
        if changed:
            raise ToPruneError(
                f"cannot resume {self.out}: the run was started with other settings "
                f"({', '.join(changed)}); use a new --output or the same options"
            )
        self.step, self.best = blob["step"], blob["best"]
        self.step_seconds = list(blob.get("step_seconds", []))
        self.student.load_state_dict(blob["student"])
        self.gates.load_state_dict(blob["gates"])
        with torch.no_grad():
            self.lambdas.copy_(blob["lambdas"])
        for name in ("opt", "gate_opt", "lambda_opt", "schedule"):
            getattr(self, name).load_state_dict(blob[name])
        self.sampler.set_state(blob["sampler"].cpu())
        torch.set_rng_state(blob["rng"].cpu())
        if blob.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state.cpu() for state in blob["cuda_rng"]])
        self._trim_log()
        if self._hard_phase_due():
            self.freeze_plan()

    def _trim_log(self) -> None:
        """Drop log lines written after the checkpoint (the resumed run writes them again, identically) and a
        partial last line of a kill mid-write."""
        path = self.out / "metrics.jsonl"
        if path.exists() and self.accelerator.is_main_process:
            records = read_metrics(path)
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records if r["step"] <= self.step))

    def _log_line(self, record: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
