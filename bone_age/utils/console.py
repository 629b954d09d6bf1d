"""What a run shows in a terminal and writes to its log: progress, quiet third-party output, and
a closing summary.

- ``progress``: a tqdm bar on a terminal; elsewhere (a log file, CI, SLURM's output) a plain
  line at most every ``every_s`` seconds, so that a log is readable and never silent for long.
- ``quiet_third_party``: drops tips, adverts and warnings a user cannot act on (``verbose=true``
  keeps them); messages a user can act on stay.
- ``bone_age.epoch_progress.EpochProgress`` (a callback) prints the training's lines.
- ``run_summary``: test MAE (SD), r and baseline, the files worth opening, the next commands.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("bone_age")

# Third-party lines that tell a user nothing they can act on in a bone-age run.
_NOISE = (
    "Tip:",                       # Lightning's adverts for its cloud products
    "available: False",           # "GPU available: False, used: False", TPU, HPU
    "LOCAL_RANK:",
    "`Trainer.fit` stopped: `max_epochs=",  # the epoch lines already say so
)
_NOISY_WARNINGS = (
    ".*LeafSpec.*",                            # a torch deprecation inside Lightning
    ".*does not have many workers.*",          # data.num_workers=0 is deliberate on CPU
    ".*smaller than the logging interval.*",
    ".*srun.*command is available.*",
    ".*TensorBoard.*not installed.*",
    ".*is not supported by the model summary.*",  # bf16: its size estimate, nothing to act on
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(part in message for part in _NOISE)


_DROP_NOISE = _DropNoise()  # one instance: addFilter skips it when a sweep's next job re-adds it


def quiet_third_party() -> None:
    """Filter Lightning's tips and hardware lines and warnings nobody can act on."""
    noise = _DROP_NOISE
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric",
                 "lightning_fabric", "pytorch_lightning.utilities.rank_zero",
                 "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        logger.addFilter(noise)
        for handler in logger.handlers:
            handler.addFilter(noise)
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # The layer table of Lightning's model summary (num_params is in metrics.json), and W&B's
    # banners (its own switch; a user's WANDB_SILENT wins).
    for name in ("pytorch_lightning.callbacks.model_summary",
                 "lightning.pytorch.callbacks.model_summary"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_SILENT", "true")


def plural(n: int, noun: str) -> str:
    """``1 study``, ``2 studies``, ``0 files``: a count with its noun (the last word) agreeing."""
    if n == 1:
        return f"{n} {noun}"
    head, _, last = noun.rpartition(" ")
    if last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    elif not last.endswith("s"):
        last += "s"
    return f"{n} {head + ' ' if head else ''}{last}"


def say(message: str) -> None:
    """A progress line: through logging where it is set up (a run, its log file), else stderr."""
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info(message)
    else:
        print(message, file=sys.stderr, flush=True)


class _LineProgress:
    """tqdm's interface (update, close, iteration) as plain lines, at most one per ``every_s``,
    and at least one per ``every_s`` too: a ticker thread speaks when updates stall (a slow
    study, a machine shared with other jobs), so that a log is never silent for long.

    ``unit=None`` is a phase without counts (``heartbeat``): its lines say how long it has run.
    """

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str,
                 unit: str | None, every_s: float, quiet: bool = False) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.every_s, self.n, self.quiet, self.shown = every_s, 0, quiet, 0
        self.start = self.last = time.perf_counter()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if not quiet:
            # The thread holds a weak reference: a display dropped without close() stops it.
            threading.Thread(target=_tick, args=(weakref.ref(self), self._closed,
                                                  min(0.5, every_s / 4)),
                             name=f"progress: {desc}", daemon=True).start()

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.n += n
            now = time.perf_counter()
            if now - self.last >= self.every_s:
                self._line(now)

    def _line(self, now: float) -> None:
        self.shown, self.last = self.n, now
        if self.quiet:
            return
        if self.unit is None:
            say(f"{self.desc}: still working, {now - self.start:.0f} s")
            return
        of = f"/{self.total}" if self.total else ""
        say(f"{self.desc}: {self.n}{of} {self.unit}, {now - self.start:.0f} s")

    def _stalled(self) -> None:
        with self._lock:
            now = time.perf_counter()
            if not self._closed.is_set() and now - self.last >= self.every_s:
                self._line(now)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self.unit is not None and self.n != self.shown:  # the last count, unless shown
                self._line(time.perf_counter())

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> _LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tick(ref: weakref.ref, closed: threading.Event, poll_s: float) -> None:
    while not closed.wait(poll_s):
        display = ref()
        if display is None:
            return
        display._stalled()
        del display


def heartbeat(desc: str, enabled: bool = True, every_s: float = 10.0) -> _LineProgress:
    """A context for a phase without counts: ``desc: still working, N s`` every ``every_s``.

    Args:
        desc: the phase, as its opening line names it (e.g. "phantom: yardsticks").
        enabled: False shows nothing.
        every_s: longest silence, in seconds.
    """
    return _LineProgress(None, None, desc, None, every_s, quiet=not enabled)


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True, every_s: float = 10.0) -> Any:
    """A progress display: tqdm on a terminal, periodic log lines elsewhere, nothing if disabled.

    Args:
        iterable: what to wrap (or None and call ``update``).
        total: number of items, if known.
        desc: what is being done, e.g. "caching studies".
        unit: what one item is, e.g. "study".
        enabled: False shows nothing.
        every_s: seconds between lines when the output is not a terminal.
    """
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr)
    return _LineProgress(iterable, total, desc, unit, every_s, quiet=not enabled)


def duration(seconds: float) -> str:
    """``45 s``, ``3 min 35 s``, ``2 h 05 min``, ``1.5 days``: a time as a person reads it."""
    seconds = max(0, round(seconds))
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def size_text(n_bytes: float) -> str:
    """``738 MB``, ``4.7 GB``: a size on disk as a person reads it."""
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.0f} MB"


def python_command(module: str, *args: str | Path) -> str:
    """``module`` as a command that runs as printed from a new shell in this folder.

    The interpreter of this process (``.venv/bin/python`` relative to the working folder where
    it lies inside it), not a bare ``python`` that may lack the project's packages; arguments
    quoted for the shell.
    """
    exe = Path(sys.executable)
    if exe.is_relative_to(Path.cwd()):
        exe = exe.relative_to(Path.cwd())
    return shlex.join([str(exe), "-m", module, *(str(a) for a in args)])


def run_summary(metrics: dict[str, Any], run_dir: Path, seconds: float) -> str:
    """The closing lines of a run: its figures, the files to open first, the next commands."""
    best = sorted((run_dir / "checkpoints").glob("epoch*.ckpt"))
    ckpt = best[-1] if best else run_dir / "checkpoints" / "last.ckpt"
    files = [("metrics.json", "every figure of the run"),
             ("scatter.png", "predicted vs chronological age (the paper's Fig. 4)"),
             ("predictions.csv", "one row per test subject"),
             (str(ckpt.relative_to(run_dir)), "the checkpoint tested (lowest validation loss)")]
    width = max(len(f) for f, _ in files)
    yardsticks = ""
    if "phantom_floor_mae" in metrics and "phantom_oracle_mae" in metrics:
        yardsticks = (f"  the phantom's yardsticks: floor {metrics['phantom_floor_mae']:.2f} y "
                      f"(no model can do better), oracle {metrics['phantom_oracle_mae']:.2f} y "
                      "(a model given the simulated age effects)")
    lines = [
        f"bone-age: finished in {duration(seconds)}",
        f"  test MAE {metrics['mae']:.2f} y (SD {metrics.get('mae_sd', float('nan')):.2f}), "
        f"r {metrics['pearson_r']:.2f}; baseline (always the training mean) "
        f"{metrics['baseline_mae']:.2f} y; fold {metrics.get('fold', '?')}, "
        f"{metrics['n_test']} test subjects",
        *([yardsticks] if yardsticks else []),
        f"  run folder: {run_dir}",
        *(f"    {name:<{width}}  {what}" for name, what in files if (run_dir / name).exists()),
        "  next:",
        "    " + python_command("bone_age.predict", ckpt, "DICOM_FOLDER_OR_MANIFEST", "--out",
                                "predictions.csv"),
        "    " + python_command("bone_age.run", "experiment=table1_cpu")
        + "   (Table 1 at CPU size: 30 runs, ~12 min on 2 cores)",
        "    " + python_command("bone_age.run", "experiment=table1", "trainer=gpu")
        + "   (the paper's Table 1: 60 runs, a GPU's work)",
        "    " + python_command("bone_age.report", "multirun/SWEEP_FOLDER")
        + "   (a sweep's Table 1 again; the sweep names its folder)",
    ]
    return "\n".join(lines)
