#!/usr/bin/env bash
# The CPU precision decision's evidence (issue 36): the tiny bf16 command of the issue over
# seeds, in bf16-mixed and in float32, and quickstarts in both; one CSV row per run.
#
#   experiments/bf16_cpu/measure.sh OUTDIR [SEEDS] [QUICKSTART_SEEDS]
#
# SEEDS (default "1 2 ... 20") for the tiny command, QUICKSTART_SEEDS (default "0 1 2 3 4").
# PYTHON selects the interpreter (default .venv/bin/python; PYTHONPATH picks a checkout).
# threads is pinned so that a busy machine computes the same numbers.
set -uo pipefail
OUT=${1:?usage: measure.sh OUTDIR [SEEDS] [QUICKSTART_SEEDS]}
SEEDS=${2:-$(seq -s ' ' 1 20)}
QSEEDS=${3-0 1 2 3 4}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
CSV=$OUT/runs.csv
[[ -f $CSV ]] || echo "command,precision_asked,seed,exit,precision_ran,mae,pred_age_sd,wall_s,last_line" > "$CSV"
TINY="trainer=cpu model.backbone=test_resnet data.image_size=[32,16] trainer.max_epochs=2 data.subjects=120 logger=none threads=2"
QUICK="experiment=quickstart threads=2 logger=none"

one() {  # one NAME PRECISION SEED ARGS...
  local name=$1 precision=$2 seed=$3; shift 3
  local dir=$OUT/${name}_${precision}_s$seed start end rc
  rm -rf "$dir"
  start=$(date +%s.%N)
  "$PY" -m bone_age.run "$@" trainer.precision=$precision seed="$seed" hydra.run.dir="$dir" \
    > "$dir.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  "$PY" - "$CSV" "$name" "$precision" "$seed" "$rc" "$dir" "$start" "$end" <<'PY'
import csv, json, sys
from pathlib import Path
csv_file, name, precision, seed, rc, run, start, end = sys.argv[1:]
metrics = Path(run, "metrics.json")
m = json.loads(metrics.read_text()) if metrics.is_file() else {}
lines = [ln for ln in Path(run + ".log").read_text().splitlines() if "bone-age run:" in ln]
with open(csv_file, "a", newline="") as f:
    csv.writer(f).writerow([name, precision, seed, rc,
                            m.get("settings", {}).get("trainer.precision", ""),
                            m.get("mae", ""), m.get("pred_age_sd", ""),
                            round(float(end) - float(start), 1), lines[-1][:200] if lines else ""])
PY
}

for seed in $SEEDS; do
  for precision in bf16-mixed 32-true; do
    one tiny "$precision" "$seed" $TINY
  done
done
for seed in $QSEEDS; do
  for precision in bf16-mixed 32-true; do  # alternating: the same load for both
    one quickstart "$precision" "$seed" $QUICK
  done
done
echo "runs: $CSV"
