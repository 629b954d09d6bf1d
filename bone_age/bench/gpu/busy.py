"""How busy the GPU is, sampled every half second in a background thread (NVML, as nvidia-smi
reads it), so that a run's record says what share of its wall time the GPU computed."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from typing import Any


class GpuBusy:
    """Samples GPU 0's utilisation (percent of the interval a kernel ran) while running.

    Uses NVML (``pynvml``, from nvidia-ml-py) where importable, else ``nvidia-smi``; without
    either (a CPU machine) it records nothing and ``share`` gives None.

    Args:
        every_s: seconds between samples.
    """

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (time.time(), percent)
        self.source = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> GpuBusy:
        reader = self._nvml() or self._smi()
        if reader is not None:
            self._thread = threading.Thread(target=self._loop, args=(reader,), daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def share(self, start: float, end: float) -> dict[str, Any] | None:
        """Mean utilisation (0-1) of the samples between two ``time.time()`` stamps."""
        inside = [pct for t, pct in self.samples if start <= t <= end]
        if not inside:
            return None
        return {"gpu_busy": round(sum(inside) / len(inside) / 100, 3), "samples": len(inside),
                "source": self.source}

    def _loop(self, reader) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.samples.append((time.time(), float(reader())))
            except Exception:  # noqa: BLE001 - a sampler must never stop the visit
                return

    def _nvml(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001 - no NVML library or no GPU: try nvidia-smi
            return None
        self.source = "nvml"
        return lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu

    def _smi(self):
        if shutil.which("nvidia-smi") is None:
            return None
        self.source = "nvidia-smi"

        def read() -> float:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--id=0",
                                  "--format=csv,noheader,nounits"], capture_output=True,
                                 text=True, timeout=5, check=True)
            return float(out.stdout.split()[0])

        return read
