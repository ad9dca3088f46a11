"""Mean ± std over seeds of finished `toprune prune` runs, grouped as the caller says: for comparisons outside the
study's own folder names (e.g. one task's schedule at more epochs). Reads each run's summary.json only: the dev
metric read once on the kept model, the held-out selection metric it was kept on, its step and FLOPs (both
conventions). Nothing is trained or timed.

    python benchmarks/probes/seed_table.py \
        --group "ToP value 3x, 5 epochs" runs/study/mrpc-top_value-3x runs/study/mrpc-top_value-3x-s58 ... \
        --group "ToP value 3x, 8 epochs" runs/study/mrpc-top_value-3x-e8 ... \
        --output benchmarks/results/mrpc_3x_epochs.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def run_row(folder: Path) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    dev, best, config = summary["dev"], summary["best"], summary["config"]
    return {
        "run": str(folder),
        "seed": config["seed"],
        "epochs": config["epochs"],
        "warmup_epochs": config["warmup_epochs"],
        "kept_step": best.get("step"),
        "steps": summary["steps"],
        "selection_metric": best["metric"],
        "dev_metric": dev["metric"],
        "flops_reduction_unpadded": dev["flops_reduction_unpadded"],
        "flops_reduction_padded": dev["flops_reduction_padded"],
    }


def finished(folder: Path) -> bool:
    """A summary with a kept model read on dev (a run that never met its target writes ``"dev": null``)."""
    path = folder / "summary.json"
    return path.is_file() and json.loads(path.read_text()).get("dev") is not None


def group_row(label: str, folders: list[str]) -> dict:
    runs = [run_row(Path(f)) for f in folders]

    def spread(key: str) -> dict:
        values = [r[key] for r in runs]
        std = statistics.stdev(values) if len(values) > 1 else None
        return {key: statistics.mean(values), f"{key}_std": std}  # rounded where printed, not before the mean

    return {"group": label, "seeds": [r["seed"] for r in runs], **spread("dev_metric"), **spread("selection_metric"),
            **spread("flops_reduction_unpadded"), "runs": runs}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar=("LABEL", "RUN"))
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    for group in args.group:
        missing = [f for f in group[1:] if not finished(Path(f))]
        if len(group) < 2 or missing:
            parser.error(
                f"--group {group[0]!r}: needs finished runs that met their target "
                f"({', '.join(missing) or 'no folder given'})"
            )
    rows = [group_row(group[0], group[1:]) for group in args.group]
    Path(args.output).write_text(json.dumps({"what": __doc__.split("\n\n")[0], "rows": rows}, indent=1) + "\n")
    for r in rows:
        std = "" if r["dev_metric_std"] is None else f" ± {r['dev_metric_std']:.2f}"
        print(
            f"{r['group']}: dev {r['dev_metric']:.2f}{std} (seeds {r['seeds']}: "
            f"{', '.join(format(x['dev_metric'], '.2f') for x in r['runs'])}); held-out {r['selection_metric']:.2f}; "
            f"FLOPs {r['flops_reduction_unpadded']:.2f}x unpadded; kept steps {[x['kept_step'] for x in r['runs']]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
