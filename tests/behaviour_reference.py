"""Short seeded pruning runs on small self-made data, whose plans and numbers are recorded in
``tests/behaviour_reference.json`` from the code before the Pruner refactor (issue 19). ``test_behaviour.py`` runs
the same cases with the code of today and compares.

Re-record only for an intended change of behaviour (say which in the commit):
    PYTHONPATH=src OMP_NUM_THREADS=1 python -m tests.behaviour_reference --write [CASE ...]
(the cases use only ``PruneConfig`` and ``ToPRun(cfg).run()``, which exist before and after the refactor).
The file holds one reference per CPU model (``toprune.costmodel.cpu_name()``): the same code gives other floats,
hence other plans, on another CPU. ``--write`` records this CPU's; for a new CPU, record from a commit whose
behaviour matched a recorded CPU's reference (an AMD EPYC's was recorded from ce2edc0, green on the Intel Xeon).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REFERENCE = Path(__file__).with_name("behaviour_reference.json")

# name -> PruneConfig settings on top of BASE: every plan source, scorer and the hard phase
CASES = {
    "top": {},
    "top_hard_phase": dict(hard_epochs=1),
    "top_rounded_no_ranking": dict(fit_plan=False, ranking=False),
    "static_question_radius": dict(method="static", scorer="question", score_radius=2),
    "random": dict(method="random"),
    "stsb_regression": dict(task="stsb"),
}
BASE = dict(
    target="1.3x",
    epochs=4,
    warmup_epochs=1,
    batch_size=16,
    max_train_samples=64,
    eval_every=4,
    save_every=4,
    max_length=64,
    padded_length=128,
    num_bins=5,
    topk=4,
    gate_lr=0.5,
    lambda_lr=0.5,
    gate_init=-3.0,
    lambda_anti_windup=False,
)  # the dynamics the reference was recorded with (issue 18 changed
# the defaults after the refactor: gates start on, lambda1 anti-windup)


def this_cpu_reference() -> dict:
    """The recorded cases of this CPU model; the calling test is skipped where none was recorded."""
    import pytest

    from toprune.costmodel import cpu_name

    reference = json.loads(REFERENCE.read_text()).get(cpu_name())
    if reference is None:  # a new CPU: record one from a commit whose behaviour was checked elsewhere
        pytest.skip(f"no behaviour reference for CPU {cpu_name()!r} (tests/behaviour_reference.py says how to record)")
    return reference


def run_case(name: str, teacher: str, data_dir: Path, out: Path) -> dict:
    """The kept plan's bins, the summary's numbers and every logged loss of one case."""
    import torch

    from toprune.prune import PruneConfig, ToPRun

    torch.set_num_threads(1)  # the recorded sums were made on one thread
    settings = dict(BASE, **CASES[name])
    if settings.get("task") == "stsb":
        teacher = teacher.replace("teacher-2", "teacher-1")
    cfg = PruneConfig(
        teacher=teacher,
        task=settings.pop("task", "mrpc"),
        data_dir=str(data_dir / "glue"),
        output_dir=str(out / name),
        **settings,
    )
    summary = ToPRun(cfg, log=lambda *_: None).run()
    plan = json.loads((out / name / "best" / "toprune_plan.json").read_text())
    log = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    # fields logged since the reference was recorded (issue 18's gate trace) are not part of the comparison
    log = [{k: v for k, v in r.items() if k not in ("gate_prob", "bin_keep", "trace", "trace_fields")} for r in log]
    return {
        "kept_bins": plan["kept_bins"],
        "num_bins": plan["num_bins"],
        "best": {
            k: summary["best"][k] for k in ("step", "metric", "flops_reduction_unpadded", "flops_reduction_padded")
        },
        "dev": {k: summary["dev"][k] for k in ("metric", "flops_reduction_unpadded", "flops_reduction_padded")},
        "log": [{k: r[k] for k in ("step", "loss", "task", "rank", "lag", "sel_metric")} for r in log],
    }


def make_inputs(root: Path) -> tuple[str, Path]:
    """A tiny random teacher per label count (``teacher-1`` for the regression case) and small GLUE data."""
    from tests.conftest import tiny_bert_with_tokenizer, write_small_glue

    for labels in (1, 2):
        model, tokenizer = tiny_bert_with_tokenizer(num_labels=labels)
        model.save_pretrained(root / f"teacher-{labels}")
        tokenizer.save_pretrained(root / f"teacher-{labels}")
    return str(root / "teacher-2"), write_small_glue(root / "data")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        teacher, data = make_inputs(Path(tmp))
        names = [a for a in sys.argv[1:] if a in CASES] or list(CASES)
        results = {name: run_case(name, teacher, data, Path(tmp) / "runs") for name in names}
    text = json.dumps(results, indent=1) + "\n"
    if "--write" in sys.argv:  # this CPU's cases named are re-recorded, the others (and other CPUs') kept
        from toprune.costmodel import cpu_name

        every = json.loads(REFERENCE.read_text())
        every[cpu_name()] = {**every.get(cpu_name(), {}), **results}
        REFERENCE.write_text(json.dumps(every, indent=1) + "\n")
    print(text)
