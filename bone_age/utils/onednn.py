"""oneDNN's instruction-set cap, set before oneDNN's first use in the process.

On Intel CPUs with AMX, torch 2.14's CPU bf16 autocast ran oneDNN's AMX kernels and trained
garbage: NaN losses and, worse, finite nonsense predictions (docs/performance.md, "bf16 on
the CPU"). With the cap at AVX512_CORE_BF16 the same runs were clean and bf16 stays native.
oneDNN reads ``ONEDNN_MAX_CPU_ISA`` once, when it first runs a primitive, so the cap is set
when ``bone_age`` is imported; a value the user set is kept (and then checked at the run's
start, ``training/precision.py``). Standard library only: nothing here may import torch.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # DNNL_: oneDNN's older name
AMX_OFF = "AVX512_CORE_BF16"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags as Linux lists them (empty where unreadable)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as lines:
            for line in lines:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cap_isa_without_amx(environ: dict[str, str] | None = None,
                        flags: set[str] | None = None) -> str | None:
    """Set ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` on an x86-64 CPU with AMX unless a cap is
    set already; returns the value set (None: nothing set)."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in ISA_VARIABLES):
        return None
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    if "amx_bf16" not in (cpu_flags() if flags is None else flags):
        return None
    environ[ISA_VARIABLES[0]] = AMX_OFF
    return AMX_OFF
