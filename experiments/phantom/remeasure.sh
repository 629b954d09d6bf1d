#!/usr/bin/env bash
# Re-measure everything the docs show about the phantom after a change to its pixels (issue 15:
# bump bone_age.phantom.VERSION first, so cached cohorts are regenerated).
#
#   experiments/phantom/remeasure.sh [--dry-run] [--part 1|2] LOGDIR
#
# Part 1 gives the same figures on a busy machine (probes, ablation, sites); part 2 times things
# and needs the machine to itself (quickstart x 3, generation x 3, phantom_bench): about 18 + 30
# minutes on the idle 2-core machine (2026-11-27; part 1 with its cohorts already generated, 23
# minutes after a VERSION bump). Logs and a summary (LOGDIR/summary.txt) go to LOGDIR; the tables
# and figures go where the docs expect them (experiments/...), ready for review with `git diff`.
set -euo pipefail

DRY=0
PARTS="1 2"
while [[ "${1:-}" == --* ]]; do
  case $1 in
    --dry-run) DRY=1; shift ;;
    --part) [[ "${2:-}" == [12] ]] || { echo "remeasure.sh: --part takes 1 or 2" >&2; exit 2; }
            PARTS=$2; shift 2 ;;
    *) echo "remeasure.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ $# -ne 1 ]]; then
  echo "usage: experiments/phantom/remeasure.sh [--dry-run] [--part 1|2] LOGDIR" >&2
  exit 2
fi
LOG=$1
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
REAL=${REAL_SCAN:-../shared/data/real-dicom/NM1_UNC}
ABLATION=ablation,ablation_sex,ablation_single,ablation_pad,ablation_softmax,ablation_mse
# The same thread count however busy the machine (threads=auto would take fewer on a loaded one,
# and a CPU's float results change with the thread count), so part 1 repeats exactly.
PIN="threads=${THREADS:-$(nproc)}"
SITES="experiment=sites data.split=stratified,site data.fold=0,1,2 $PIN"

step() {  # step NAME COMMAND...: run (or print) one command, its output in LOGDIR/NAME.log
  local name=$1; shift
  if (( DRY )); then printf "%q " "$@"; echo; return; fi
  local t0=$SECONDS
  if ! "$@" > "$LOG/$name.log" 2>&1; then
    echo "remeasure.sh: $name failed, see $LOG/$name.log" | tee -a "$LOG/summary.txt" >&2
    exit 1
  fi
  echo "$name: $(( SECONDS - t0 )) s, load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$LOG/summary.txt"
}

(( DRY )) || { mkdir -p "$LOG"; echo "start $(date -u +%FT%TZ) $(git rev-parse --short HEAD)" > "$LOG/summary.txt"; }

if [[ $PARTS == *1* ]]; then  # Part 1: figures that do not depend on the machine's load.
step realism "$PY" -m bone_age.phantom.realism "$REAL" --subjects 100 --out experiments/phantom/realism-v2
for seed in 1 2 3; do
  step "realism_seed$seed" "$PY" -m bone_age.phantom.realism "$REAL" --subjects 100 --seed "$seed" --out "$LOG/realism_seed$seed"
done
step preview "$PY" -m bone_age.phantom --preview experiments/phantom/preview.png --seed 0
step ridge_probe "$PY" experiments/phantom/ridge_probe.py --subjects 1500 --out "$LOG/probe.json"
(( DRY )) || rm -rf multirun/ablation multirun/ablation_seed1 multirun/sites_{base,noaug,total}
step ablation "$PY" -m bone_age.run -m experiment=$ABLATION $PIN hydra.sweep.dir=multirun/ablation
step ablation_seed1 "$PY" -m bone_age.run -m experiment=$ABLATION $PIN seed=1 data.split_seed=1 \
  data.cohort_seed=1 hydra.sweep.dir=multirun/ablation_seed1
step ablation_table "$PY" experiments/ablation/table.py multirun/ablation --repeat multirun/ablation_seed1 \
  --repeat-md experiments/ablation/results_seed1.md
step sites_base "$PY" -m bone_age.run -m $SITES hydra.sweep.dir=multirun/sites_base
step sites_noaug "$PY" -m bone_age.run -m $SITES augment=none hydra.sweep.dir=multirun/sites_noaug
step sites_total "$PY" -m bone_age.run -m $SITES data.normalize=total hydra.sweep.dir=multirun/sites_total
step sites_table "$PY" experiments/sites/table.py base=multirun/sites_base \
  no_augment=multirun/sites_noaug total_norm=multirun/sites_total \
  --cohort data/phantom/n900_seed42_sites3/manifest.csv --out experiments/sites
fi

if [[ $PARTS == *2* ]]; then  # Part 2: timings; nothing else may run on the machine.
for i in 1 2 3; do
  (( DRY )) || rm -rf data/phantom/n1000_seed42 data/cache outputs
  # Each line with its time, for the longest silence the README quotes.
  step "quickstart_$i" bash -o pipefail -c 'make run 2>&1 | while IFS= read -r l; do echo "$(date +%s.%N) $l"; done'
  (( DRY )) || awk 'NR > 1 { d = $1 - p; if (d > m) m = d } { p = $1 }
    END { printf "quickstart_%s longest silence %.1f s\n", i, m }' i="$i" \
    "$LOG/quickstart_$i.log" >> "$LOG/summary.txt"
done
for i in 1 2 3; do
  (( DRY )) || rm -rf "$LOG/cohort4474"
  step "generation_$i" "$PY" -m bone_age.phantom --out "$LOG/cohort4474" --subjects 4474 --seed 0 --no-progress
done
(( DRY )) || rm -rf experiments/phantom_bench/run  # a finished run would be re-read, not re-run
step phantom_bench env OMP_NUM_THREADS=1 "$PY" -m bone_age.bench --accuracy
fi
(( DRY )) || echo "end $(date -u +%FT%TZ)" >> "$LOG/summary.txt"
