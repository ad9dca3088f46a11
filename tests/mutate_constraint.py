"""Hand-written mutants of the FLOPs constraint inside ``Pruner.train_step`` (tests/README.md).

mutmut covers the math modules; the constraint's wiring in pruner_steps.py sits in a long method that mutmut would
mutate whole (hundreds of mutants, each needing a training run), so its few decisive lines are mutated here by hand.
Each mutant is applied to a scratch copy of src/ and the targeted tests must fail on it:

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
TARGET = "pruner_steps.py"  # where Pruner.train_step lives
TESTS = ["tests/test_prune.py", "-k", "multipliers or ramps"]

# (what it breaks, the line as written, its mutant)
MUTANTS = [
    ("descent instead of ascent on the multipliers", "self.lambdas.grad.neg_()", "pass"),
    (
        "multipliers never stepped",
        "for opt in (self.opt, self.gate_opt, self.lambda_opt):\n            opt.step()",
        "for opt in (self.opt, self.gate_opt):\n            opt.step()",
    ),
    ("constraint on density, not sparsity", "loss_lag = lagrangian(1.0 - rel,", "loss_lag = lagrangian(rel,"),
    (
        "target not ramped",
        "target_sparsity = (1.0 - self.target_rel) * progress",
        "target_sparsity = 1.0 - self.target_rel",
    ),
    (
        "target sign",
        "target_sparsity = (1.0 - self.target_rel) * progress",
        "target_sparsity = (1.0 + self.target_rel) * progress",
    ),
    (
        "ramp never ends",
        "progress = min(1.0, self.step / self.warmup_steps)",
        "progress = max(1.0, self.step / self.warmup_steps)",
    ),
    ("logged sparsity is the density", '"expected_sparsity": 1.0 - rel.item()', '"expected_sparsity": rel.item()'),
]


def main() -> int:
    source = (ROOT / "src" / "toprune" / TARGET).read_text()
    failures = 0
    for name, line, mutant in MUTANTS:
        if source.count(line) != 1:
            print(f"STALE     {name}: {line!r} is not in {TARGET} exactly once")
            failures += 1
            continue
        with tempfile.TemporaryDirectory() as scratch:
            shutil.copytree(ROOT / "src", Path(scratch) / "src")
            (Path(scratch) / "src" / "toprune" / TARGET).write_text(source.replace(line, mutant))
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
