"""How many cores this process may use, and how many threads to run on them.

``os.cpu_count()`` counts the machine's cores, not this process's: a job pinned by taskset or
SLURM, or a container with a CPU quota, may use fewer. Threads beyond those cores wait at
OpenMP barriers whenever another job holds a core; on a shared 2-core machine that turned a
3-minute run into 24 minutes. So every thread count of the project starts from
``usable_cores``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from bone_age.utils.errors import BoneAgeError

# cgroup v2 first, then v1: the CPU quota a container or a SLURM job step may hold.
_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
              Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def _cgroup_quota() -> float | None:
    """Cores' worth of CPU time the cgroup allows (None: no quota or none readable)."""
    try:
        if _CGROUP_V2.is_file():
            quota, period = _CGROUP_V2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_file, period_file = _CGROUP_V1
        if quota_file.is_file() and period_file.is_file():
            quota = int(quota_file.read_text())
            return None if quota <= 0 else quota / int(period_file.read_text())
    except (OSError, ValueError):
        pass
    return None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, within its cgroup's CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _our_cpus() -> set[int] | None:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def _cpu_times(stat: Path = Path("/proc/stat")) -> dict[int, tuple[int, int]]:
    """Per CPU: (all jiffies, idle jiffies) from Linux's /proc/stat ({} elsewhere)."""
    out = {}
    try:
        for line in stat.read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *fields = line.split()
                ticks = [int(v) for v in fields[:8]]  # guest time is already in user time
                out[int(name[3:])] = (sum(ticks), ticks[3] + ticks[4])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def busy_cores(sample_s: float = 0.3) -> float:
    """Cores' worth of this process's CPUs that other processes keep busy, sampled now."""
    before, start = _cpu_times(), time.process_time()
    time.sleep(sample_s)
    after, own = _cpu_times(), time.process_time() - start
    cpus = (_our_cpus() or set(after)) & set(before) & set(after)
    total = sum(after[c][0] - before[c][0] for c in cpus)
    if not cpus or total <= 0:
        return 0.0
    idle = sum(after[c][1] - before[c][1] for c in cpus)
    return max(0.0, (1 - idle / total) * len(cpus) - own / sample_s)


def thread_count(setting: object, processes: int = 1, busy: float | None = None) -> int:
    """The threads one of ``processes`` processes runs.

    ``auto``: the usable cores that other jobs leave free when the run starts (at least one),
    shared between the processes. A core another job keeps busy makes every OpenMP barrier
    wait for the thread that shares it: on 2 cores beside a busy loop, one thread is faster.

    Args:
        setting: the ``threads`` setting: ``auto`` or a count >= 1.
        processes: processes of this job on this machine (DDP ranks) sharing the cores.
        busy: cores other jobs keep busy (None: sample them now, ``busy_cores``).
    """
    if setting in (None, "auto"):
        busy = busy_cores() if busy is None else busy
        free = max(1, usable_cores() - math.floor(busy + 0.5))
        return max(1, free // max(1, processes))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise BoneAgeError(f"threads: {setting!r} is not allowed; use auto (the cores this "
                           f"process may use: {usable_cores()}) or a count >= 1")
    return setting


# Set by Lightning's DDP launcher in the processes it starts for ranks > 0, by torchrun, and by
# SLURM for a job's other tasks: such a process re-runs this job as part of it.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def launched_as_extra_rank() -> bool:
    """Whether this process is another rank of a job that a first process launched."""
    return any(os.environ.get(k, "0").strip() not in ("", "0") for k in _RANK_VARIABLES)
