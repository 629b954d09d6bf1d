"""On-disk cache of preprocessed studies: each study is decoded and resized once.

An entry is keyed by the contents of the study's files, the views read and the preprocessing
settings, so a changed file or setting simply misses the cache. Entries are written to a
temporary name and renamed into place (atomic on POSIX), so several sweep jobs can share one
cache. A study that cannot be read leaves a small ``.err`` entry with the reason, so later runs
report it without decoding again.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bone_age.data.dicom import DicomReadError, read_study_views
from bone_age.data.manifest import Problem, Study
from bone_age.data.preprocess import Preprocess
from bone_age.utils.console import progress as progress_display
from bone_age.utils.console import size_text
from bone_age.utils.errors import quiet_on_ctrl_c, workers_starting
from bone_age.utils.outputs import remove_stale_temps, write_atomic, write_text_atomic

CACHE_VERSION = 3  # 3: count-exact box resampling


def _start_worker() -> None:
    """A cache worker: one torch thread (the workers already fill the cores), and Ctrl-C ends
    it without a traceback of its own (its parent says so in one line)."""
    torch.set_num_threads(1)
    quiet_on_ctrl_c()


def file_digest(path: Path) -> str:
    """Content hash of a file, hashed once per process while its size and mtime stay the same
    (a run asks for every study's key in prepare_data and again in setup)."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class StudyCache:
    """Preprocessed (views, H, W) float32 count images, one ``.npy`` file per study."""

    def __init__(self, root: str | Path, preprocess: Preprocess, views: Sequence[str]) -> None:
        self.root = Path(root)
        self.preprocess = preprocess
        self.views = tuple(views)
        settings = {"version": CACHE_VERSION, "views": self.views, **preprocess.settings()}
        self._settings = json.dumps(settings, sort_keys=True)
        self.root.mkdir(parents=True, exist_ok=True)

    def key(self, study: Study) -> str:
        h = hashlib.blake2b(self._settings.encode(), digest_size=20)
        for view in self.views:
            h.update(f"{view}:{file_digest(getattr(study, view))}".encode())
        return h.hexdigest()

    def entry(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def _build_one(self, study: Study, key: str) -> str | None:
        """Decode + preprocess one study into the cache; returns an error message or None."""
        target = self.entry(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            views = read_study_views({view: getattr(study, view) for view in self.views})
            image = self.preprocess(views)
        except DicomReadError as err:
            # Keyed by content: identical files elsewhere share this entry, so the reason is
            # stored with the view it concerns, and each study names its own file (problems()).
            view = next((v for v in self.views if str(getattr(study, v)) == err.path), None)
            record = json.dumps({"view": view, "path": err.path, "reason": err.reason})
            write_text_atomic(target.with_suffix(".err"), record)
            return str(err)
        write_atomic(target, lambda tmp: np.save(tmp, image))
        return None

    def build(
        self, studies: Sequence[Study], workers: int = 0, progress: bool = True
    ) -> list[str]:
        """Fill the cache for ``studies``; returns the keys, in order."""
        keys = [self.key(s) for s in studies]
        todo = [
            (s, k) for s, k in zip(studies, keys, strict=True)
            if not self.entry(k).exists() and not self.entry(k).with_suffix(".err").exists()
        ]
        if todo:
            for folder in {self.entry(k).parent for _, k in todo}:
                remove_stale_temps(folder)  # entries a killed build left half-written
            h, w = self.preprocess.image_size
            size = len(todo) * len(self.views) * h * w * 4  # float32 images
            bar = progress_display(total=len(todo), desc=f"caching studies (about "
                                   f"{size_text(size)})", unit="studies",
                                   enabled=progress)
            if workers > 1 and len(todo) > 8:
                with ProcessPoolExecutor(workers, initializer=_start_worker) as pool:
                    with workers_starting():  # map hands out all work, starting the workers
                        built = pool.map(self._build_one, *zip(*todo, strict=True),
                                         chunksize=8)
                    for _ in built:
                        bar.update()
            else:
                for study, key in todo:
                    self._build_one(study, key)
                    bar.update()
            bar.close()
        return keys

    def problems(self, studies: Iterable[Study], keys: Iterable[str]) -> list[Problem]:
        """Studies whose files could not be read, with the reason recorded at build time."""
        out = []
        for study, key in zip(studies, keys, strict=True):
            err = self.entry(key).with_suffix(".err")
            if err.exists():
                out.append(Problem("cache", study.row, study.subject_id, "unreadable",
                                   _reason(study, err.read_text())))
        return out


def _reason(study: Study, stored: str) -> str:
    """The stored failure, naming this study's own file (entries before 2026-12: plain text)."""
    try:
        record = json.loads(stored)
        path = getattr(study, record["view"]) if record.get("view") else record["path"]
        return f"{path}: {record['reason']}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return stored
