"""``make wheels``: the wheels a bare GPU machine lacks, for its Python 3.12 (manylinux x86-64).

The lent GPU machines have torch, Lightning, timm, torchmetrics, numpy, scikit-learn,
matplotlib and ONNX, but no package index: what bone-age needs beyond those travels as wheels,
at the versions this project's environment runs (read from it, so the two never drift).
antlr4-python3-runtime 4.9.3 has only a source release: its wheel is built here.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import shutil
import subprocess
import sys
from pathlib import Path

# Not on the GPU machine's image (library device/KINDS.md), needed by a run, index or predict.
MISSING_ON_GPU_MACHINE = (
    "hydra-core", "omegaconf", "antlr4-python3-runtime", "pydicom", "pylibjpeg",
    "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pyjpegls",
    "hydra-joblib-launcher",  # k sweep jobs on one GPU (joblib itself is on the image)
)
SOURCE_ONLY = ("antlr4-python3-runtime",)
# pip matches manylinux tags exactly: every glibc up to the GPU image's 2.39 (Ubuntu 24.04).
PLATFORMS = (*(f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)), "manylinux2014_x86_64",
             "manylinux1_x86_64")


def pinned() -> list[str]:
    """``name==version`` of each missing package, as installed in this environment."""
    return [f"{name}=={md.version(name)}" for name in MISSING_ON_GPU_MACHINE]


def download(out: Path, python_version: str = "3.12") -> list[Path]:
    """Fill ``out`` (emptied first) with exactly one wheel per missing package."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    for req in pinned():
        name = req.split("==")[0]
        if name in SOURCE_ONLY:
            cmd = [*pip, "wheel", "--no-deps", "--no-binary", name, "-w", str(out), req]
        else:
            cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--implementation",
                   "cp", "--python-version", python_version, "-d", str(out), req]
            for platform in PLATFORMS:
                cmd += ["--platform", platform]
        subprocess.run(cmd, check=True)
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != len(MISSING_ON_GPU_MACHINE):
        raise SystemExit(f"expected {len(MISSING_ON_GPU_MACHINE)} wheels in {out}, got "
                         f"{[w.name for w in wheels]}")
    return wheels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bone_age.bench.gpu.wheels", description=__doc__)
    p.add_argument("--out", type=Path, default=Path(".whl"))
    args = p.parse_args(argv)
    wheels = download(args.out)
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print("\n".join(w.name for w in wheels) + f"\n{len(wheels)} wheels, {size:.1f} MiB in "
          f"{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
