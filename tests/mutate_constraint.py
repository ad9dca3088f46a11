"""Hand-written mutants of the FLOPs constraint inside ``Pruner.train_step`` (tests/README.md).

mutmut covers the math modules; the constraint's wiring in pruner_steps.py sits in a long method that mutmut would
mutate whole (hundreds of mutants, each needing a training run), so its few decisive lines, and those of the
multipliers' ascent it calls (``losses.ascend_multipliers_``), are mutated here by hand. Each mutant is applied to a
scratch copy of src/ and the run's tests must fail on it:

    python tests/mutate_constraint.py      # prints one line per mutant; exit 1 if one survives or is stale
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS, ASCENT = "pruner_steps.py", "losses.py"  # Pruner.train_step; the multipliers' ascent step it calls
TESTS = ["tests/test_prune.py", "-k", "multipliers or ramps"]

# (what it breaks, the module, the line as written, its mutant)
MUTANTS = [
    ("descent instead of ascent on the multipliers", ASCENT, "lambdas.grad.neg_()", "pass"),
    ("multipliers never stepped", ASCENT, "lambda_opt.step()", "pass"),
    (
        "train_step never calls the ascent",
        STEPS,
        "ascend_multipliers_(self.lambdas, self.lambda_opt, cfg.lambda_anti_windup)",
        "pass",
    ),
    ("constraint on density, not sparsity", STEPS, "loss_lag = lagrangian(1.0 - rel,", "loss_lag = lagrangian(rel,"),
    (
        "target not ramped",
        STEPS,
        "target_sparsity = (1.0 - self.target_rel) * progress",
        "target_sparsity = 1.0 - self.target_rel",
    ),
    (
        "target sign",
        STEPS,
        "target_sparsity = (1.0 - self.target_rel) * progress",
        "target_sparsity = (1.0 + self.target_rel) * progress",
    ),
    (
        "ramp never ends",
        STEPS,
        "progress = min(1.0, self.step / self.warmup_steps)",
        "progress = max(1.0, self.step / self.warmup_steps)",
    ),
    (
        "logged sparsity is the density",
        STEPS,
        '"expected_sparsity": 1.0 - rel.item()',
        '"expected_sparsity": rel.item()',
    ),
]


def main() -> int:
    failures = 0
    for name, target, line, mutant in MUTANTS:
        source = (ROOT / "src" / "toprune" / target).read_text()
        if source.count(line) != 1:
            print(f"STALE     {name}: {line!r} is not in {target} exactly once")
            failures += 1
            continue
        with tempfile.TemporaryDirectory() as scratch:
            shutil.copytree(ROOT / "src", Path(scratch) / "src")
            (Path(scratch) / "src" / "toprune" / target).write_text(source.replace(line, mutant))
            env = dict(os.environ, PYTHONPATH=str(Path(scratch) / "src"), OMP_NUM_THREADS="1")
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
        killed = proc.returncode == 1  # tests failed (2-5 would be a broken run, not a kill)
        print(f"{'KILLED' if killed else 'SURVIVED':9} {name}" + ("" if killed else f" (exit {proc.returncode})"))
        failures += not killed
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
