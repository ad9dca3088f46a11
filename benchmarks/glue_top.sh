#!/usr/bin/env bash
# Teacher fine-tuning, ToP pruning and dense-vs-pruned timing for one GLUE task, with the project's own CLI.
# Usage: benchmarks/glue_top.sh TASK TARGET [extra `toprune prune` options...]
#   benchmarks/glue_top.sh mrpc 2x
#   benchmarks/glue_top.sh sst2 2x --max-train-samples 8000
# Runs go to runs/ (not committed); the numbers go to benchmarks/results/top_<task>.json.
# Re-running resumes: a finished teacher is reused, a killed pruning run continues from its checkpoint.
set -euo pipefail
task=$1; target=$2; shift 2
cd "$(dirname "$0")/.."
teacher_args=()  # the teacher sees the same train subset as the pruning run
args=("$@")
for i in "${!args[@]}"; do
  [[ ${args[$i]} == --max-train-samples ]] && teacher_args=(--max-train-samples "${args[$((i + 1))]}")
done
[ -f "runs/$task-teacher/toprune_teacher.json" ] || toprune finetune --task "$task" --output "runs/$task-teacher" ${teacher_args[@]+"${teacher_args[@]}"}
[ -f "runs/$task-top/summary.json" ] || toprune prune --teacher "runs/$task-teacher" --task "$task" --target "$target" \
    --output "runs/$task-top" --resume ${args[@]+"${args[@]}"}
toprune bench --dense "runs/$task-teacher" --pruned "runs/$task-top/best" --task "$task" --json \
    > "benchmarks/results/top_$task.json"
python - "$task" <<'PY'
import json, sys
task = sys.argv[1]
r = json.load(open(f"benchmarks/results/top_{task}.json"))
s = json.load(open(f"runs/{task}-top/summary.json"))
t = json.load(open(f"runs/{task}-teacher/toprune_teacher.json"))
r["teacher_training"] = {k: t[k] for k in ("epochs", "lr", "train_examples", "seed", "steps", "mean_step_ms") if k in t}
r["pruning_run"] = {"kept_step": s["best"]["step"], "steps": s["steps"], "train_examples": s["train_examples"],
                    "mean_step_ms": s["mean_step_ms"], "target": s["target"], "convention": s["convention"],
                    "config": s["config"]}
json.dump(r, open(f"benchmarks/results/top_{task}.json", "w"), indent=1)
print(f"{task}: dense {r['dense']['metric']:.2f} -> ToP {r['pruned']['metric']:.2f} {r['metric_name']}; "
      f"FLOPs {r['pruned']['flops_reduction_unpadded']:.2f}x unpadded / {r['pruned']['flops_reduction_padded']:.2f}x padded; "
      f"speed-up b1 {r['speedup_b1']:.2f}x, b32 {r['speedup_b32']:.2f}x")
PY
