"""What a frontier says, in the two questions a user asks of it (issue 21's bars, computed from the rows):

1. What does reduced precision cost each model, beyond what it costs the dense one in the same backend? (a pruned
   model whose INT8 graph loses more than the dense model's does not stack with quantisation)
2. Which is the fastest model within ``within`` points of the teacher at each batch size, and how much faster is it
   than each dense row (dense ONNX Runtime INT8 and OpenVINO being what users already run)?

Pure functions of ``toprune frontier``'s rows, so that the JSON, the table and the tests agree.
"""

from __future__ import annotations


def label(row: dict) -> str:
    target = f" {row['target']}" if row.get("target") else ""
    qat = " +QAT" if row.get("qat") else ""
    return f"{row['model']}{target}{qat} {row['backend']} {row['precision']}"


def precision_costs(rows: list[dict]) -> list[dict]:
    """Per reduced-precision row: its metric minus the same model's f32 metric in the same backend, and that change
    minus the dense model's change for the same backend and precision (negative: it loses more than dense)."""
    f32 = {(r["folder"], r["backend"]): r["metric"] for r in rows if r["precision"] == "f32"}
    dense_change = {
        (r["backend"], r["precision"]): r["metric"] - f32[(r["folder"], r["backend"])]
        for r in rows
        if r["model"] == "dense" and r["precision"] != "f32" and (r["folder"], r["backend"]) in f32
    }
    costs = []
    for r in rows:
        if r["model"] == "dense" or r["precision"] == "f32" or (r["folder"], r["backend"]) not in f32:
            continue
        change = r["metric"] - f32[(r["folder"], r["backend"])]
        dense = dense_change.get((r["backend"], r["precision"]))
        costs.append(
            {
                "row": label(r),
                "change": change,
                "dense_change": dense,
                "beyond_dense": None if dense is None else change - dense,
            }
        )
    return costs


def fastest_within(rows: list[dict], batch_sizes: list[int]) -> dict:
    """Per batch size: the fastest non-dense row within the teacher's margin, with its speed-up over every dense row
    (None when no pruned model is within the margin)."""
    out = {}
    candidates = [r for r in rows if r["model"] != "dense" and r["within_teacher"]]
    for bs in batch_sizes:
        key = f"ms_b{bs}"
        if not candidates:
            out[f"b{bs}"] = None
            continue
        best = min(candidates, key=lambda r: r[key])
        out[f"b{bs}"] = {
            "row": label(best),
            "metric": best["metric"],
            "ms": best[key],
            "speedup_vs_dense": {label(r): r[key] / best[key] for r in rows if r["model"] == "dense"},
        }
    return out


def verdict(rows: list[dict], batch_sizes: list[int]) -> dict:
    return {"precision_costs": precision_costs(rows), "fastest_within_teacher": fastest_within(rows, batch_sizes)}


def verdict_markdown(summary: dict, within: float) -> str:
    lines = [
        "",
        "Reduced precision: the metric's change against the same model's f32 graph (and beyond the dense one's):",
    ]
    for c in summary["precision_costs"]:
        beyond = ""
        if c["beyond_dense"] is not None:
            beyond = f" (dense {c['dense_change']:+.2f}: {c['beyond_dense']:+.2f} beyond)"
        lines.append(f"- {c['row']}: {c['change']:+.2f}{beyond}")
    lines.append(f"\nFastest pruned model within {within:g} point of the teacher:")
    for bs, best in summary["fastest_within_teacher"].items():
        if best is None:
            lines.append(f"- {bs}: none is within {within:g} point")
            continue
        ratios = ", ".join(f"{name} {x:.2f}x" for name, x in best["speedup_vs_dense"].items())
        lines.append(f"- {bs}: {best['row']} ({best['metric']:.2f}, {best['ms']:.2f} ms); faster than dense: {ratios}")
    return "\n".join(lines) + "\n"
