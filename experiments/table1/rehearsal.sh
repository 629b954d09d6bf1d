#!/usr/bin/env bash
# Dress rehearsal of a GPU visit on this CPU, under the GPU image's versions (`make rehearsal`):
# a virtual environment with the image's packages (experiments/gpu/image-requirements.txt;
# Python 3.12 where this machine has one), bone-age's wheels installed from .whl/ with
# --no-index as visit.sh does there, then `visit.sh --dry-run` (float32, tiny settings) and the
# dry run's checkpoint exported to ONNX and predicted from with onnxruntime. Anything that
# breaks under the image's versions breaks here, before a GPU minute is spent on it.
#   experiments/table1/rehearsal.sh [OUT] [--print]
# --print: say the commands, run nothing (no install, no network; the tests use it).
# Environment: REHEARSAL_VENV (default .venv-gpu-image), REHEARSAL_PYTHON (the interpreter the
# environment is made with; default: a python3.12 found here, else python3), WHEELS (.whl).
set -euo pipefail
out=/tmp/bone_age_rehearsal
print=0
for arg in "$@"; do
  case $arg in
    --print) print=1 ;;
    -*) echo "rehearsal: unknown option $arg (usage: rehearsal.sh [OUT] [--print])" >&2; exit 2 ;;
    *) out=$arg ;;
  esac
done
cd "$(dirname "$0")/../.."
venv=${REHEARSAL_VENV:-.venv-gpu-image}
reqs=experiments/gpu/image-requirements.txt
wheels=${WHEELS:-.whl}

# The GPU image's python3 is 3.12 (KINDS.md): take a 3.12 that runs (a pyenv shim for a version
# not selected does not), else say that the rehearsal runs on another Python.
find_python() {
  if [ -n "${REHEARSAL_PYTHON:-}" ]; then echo "$REHEARSAL_PYTHON"; return; fi
  local c
  for c in python3.12 $(command -v pyenv >/dev/null && ls -d "$(pyenv root)"/versions/3.12*/bin/python3.12 2>/dev/null); do
    if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      echo "$c"; return
    fi
  done
  echo "rehearsal: no Python 3.12 here; using python3 ($(python3 -V 2>&1)), not the image's 3.12" >&2
  echo python3
}

say() { printf '%q ' "$@"; echo; }
step() { if [ "$print" = 1 ]; then say "$@"; else "$@"; fi; }

python=$(find_python)
stamp=$venv/.image-requirements
if [ "$print" = 1 ] || ! cmp -s "$reqs" "$stamp"; then  # (re)built when the list changes
  step rm -rf "$venv"
  step "$python" -m venv "$venv"
  step "$venv/bin/python" -m pip install -q -r "$reqs"
  step cp "$reqs" "$stamp"
fi
if [ "$print" = 0 ] && ! compgen -G "$wheels/*.whl" > /dev/null; then
  echo "rehearsal: no wheels in $wheels: run make wheels first" >&2; exit 2
fi
# The image has neither Hydra nor pydicom: they must come from the wheels, as there.
step "$venv/bin/python" -c 'import importlib.util as u, sys; m = [m for m in ("hydra", "omegaconf", "pydicom") if u.find_spec(m)]; sys.exit(f"rehearsal: {m} installed, which the GPU image lacks" if m else 0)'
step rm -rf "$out"
step env PYTHON="$venv/bin/python" GPU_SITE="$out/site" WHEELS="$wheels" \
  experiments/table1/visit.sh "$out" --dry-run --max-runs 2 --budget 1800
# Beyond a visit: the run's checkpoint to ONNX (torch.onnx under the image's torch) and
# predictions from that model with the image's onnxruntime.
export_and_predict() {
  local ckpt=CKPT manifest=MANIFEST
  if [ "$print" = 0 ]; then
    ckpt=$(find "$out/work/runs" -name '*.ckpt' | sort | head -n 1)
    manifest=$(find "$out/work/data" -name 'manifest.csv' | sort | head -n 1)
    if [ -z "$ckpt" ] || [ -z "$manifest" ]; then
      echo "rehearsal: the dry visit left no checkpoint or manifest under $out/work" >&2
      exit 1
    fi
  fi
  step env PYTHONPATH="$out/site" "$venv/bin/python" -m bone_age.export "$ckpt" \
    --out "$out/model.onnx"
  step env PYTHONPATH="$out/site" "$venv/bin/python" -m bone_age.predict "$out/model.onnx" \
    "$manifest" --out "$out/predictions_onnx.csv"
}
export_and_predict
step "$venv/bin/python" -c 'import numpy, onnx, onnxruntime, pytorch_lightning, sys, timm, torch, torchmetrics, torchvision; print("rehearsal passed: Python", sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__, "lightning", pytorch_lightning.__version__, "torchmetrics", torchmetrics.__version__, "numpy", numpy.__version__, "timm", timm.__version__, "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__)'
