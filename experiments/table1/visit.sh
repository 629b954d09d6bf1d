#!/usr/bin/env bash
# One GPU visit of the Table 1 campaign, on a bare GPU machine (no network): install the wheels
# carried in .whl/ (`make wheels` here), then run the next unfinished runs within the budget and
# pack them into OUT/table1_visit_<UTC>.tar.gz. The budget counts from this script's start.
#   experiments/table1/visit.sh OUT [--budget 540] [--max-runs N] [--jobs K] [--share-cost F]
#                                   [--compile MODELS] [--dry-run]
# Merge the archive here: python -m bone_age.bench.campaign merge ARCHIVE
set -euo pipefail
started=$(date +%s)
out=${1:?usage: experiments/table1/visit.sh OUT [--budget SECONDS] [--max-runs N] [--jobs K] [--dry-run]}
shift
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
site=${GPU_SITE:-/tmp/bone_age_site}
wheels=${WHEELS:-.whl}  # `make wheels` builds them for the GPU machine's Python
if [ -d "$wheels" ] && compgen -G "$wheels/*.whl" > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$python" -m bone_age.bench.campaign visit --out "$out" --started "$started" "$@"
