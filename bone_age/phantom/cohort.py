"""Cohort generation: parallel rendering + DICOM writing, manifest, truth table, yardsticks."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import multiprocessing as mp
import numbers
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from threadpoolctl import threadpool_limits

from bone_age.utils.arguments import MAX_SITES
from bone_age.utils.console import heartbeat, say, size_text
from bone_age.utils.console import progress as progress_display
from bone_age.utils.cores import usable_cores
from bone_age.utils.errors import BoneAgeError, workers_starting
from bone_age.utils.outputs import remove_stale_temps, temp_path, write_text_atomic
from bone_age.utils.tables import write_csv

from .body_plan import drawn_arm_abduction
from .dicom_writer import TRANSFER_SYNTAXES, write_study
from .effects import Effects
from .render import NCOLS, NROWS
from .sites import Site, make_sites
from .subject import FEMALE_TO_MALE, age_prior, render_subject, sample_subject
from .yardsticks import bayes_mae_floor, oracle_mae

# Part of a cohort's options (phantom_info.json): ensure_cohort reuses a cached cohort only when
# they match, so bump it whenever the generated pixels or truth change.
VERSION = "3.1.0"
LAYOUTS = ("two-frame", "single-frame")
MANIFEST_COLUMNS = ["subject_id", "age", "sex", "anterior", "posterior", "study_uid"]
# bone_age.data.manifest.SITE_COLUMN (the phantom does not import bone_age.data): multi-site only.
SITE_COLUMN = "site"
EFFECT_COLUMNS = [k for k in Effects.__dataclass_fields__ if k not in ("deg_sites", "facet_sites")]
DICOM_DIR = "dicom"
DEFAULTS: dict[str, Any] = {
    "sigma": 3.0,
    "variability": 1.0,
    "layout": "two-frame",
    "transfer_syntax": "explicit",
}


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _start_worker() -> None:
    """A worker process: memory kept for reuse, and Ctrl-C left to the parent, which ends the
    pool (no worker traceback).

    A worker that ended itself on Ctrl-C could die holding the pool's task-queue lock (an idle
    worker holds it while it waits for work), and ``Pool.terminate`` then waits for that lock
    forever: seen as a hung Ctrl-C test under load.
    """
    keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def keep_freed_memory() -> None:
    """Let this process reuse the memory it frees instead of handing it back (glibc only).

    A subject allocates and frees some 20 MB of large arrays. By default glibc serves them by
    mmap and returns them to the system, so every subject page-faults ~4,500 fresh zeroed pages
    (about 9 ms, a sixth of its time). Called in processes the phantom owns (its worker
    processes and its command), never in a caller's process. Changes no output.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return  # not glibc: keep the allocator's defaults
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's own upper bound for its dynamic threshold
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)


def cohort_options(subjects: int, seed: int, **options: Any) -> dict[str, Any]:
    """The cohort's recorded options (phantom_info.json), every option checked first.

    The one check of the phantom's options: ``generate_cohort`` and ``ensure_cohort`` call it,
    and so does a training run's settings check (through ``PhantomSource``), before any folder
    is made.

    Raises:
        ValueError: naming the option, its value and what it allows (unknown options: the
            allowed names).
    """
    sites = options.pop("sites", 1)
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        allowed = ", ".join(sorted([*DEFAULTS, "sites"]))
        raise ValueError(f"unknown phantom option(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"the options are {allowed}")
    opts = {**DEFAULTS, **options}
    if isinstance(subjects, bool) or not isinstance(subjects, numbers.Integral) or subjects < 1:
        raise ValueError(f"subjects must be >= 1, got {subjects!r}")
    most = min(subjects, MAX_SITES)
    if isinstance(sites, bool) or not isinstance(sites, numbers.Integral) \
            or not 1 <= sites <= most:
        raise ValueError(f"sites must be a whole number from 1 to {most} (at most {MAX_SITES} "
                         f"and at most the number of subjects), got {sites!r}")
    if sites != 1:  # one site is recorded as before sites existed, so its cohorts stay valid
        opts["sites"] = int(sites)
    if opts["layout"] not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {opts['layout']!r}")
    if opts["transfer_syntax"] not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax must be one of {sorted(TRANSFER_SYNTAXES)}, got "
                         f"{opts['transfer_syntax']!r}")
    for key in ("sigma", "variability"):  # NaN would pass a plain `< 0` test
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value) or value < 0:
            raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
    return {"version": VERSION, "subjects": int(subjects), "seed": int(seed), **opts}


def _work(
    job: tuple[int, dict[str, Any], str, Site | None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Render + write one subject (runs in a worker); returns (manifest row, truth row)."""
    index, opts, out, site = job
    subj = sample_subject(opts["seed"], index, opts["sigma"], opts["variability"], site)
    ant, post, c_ant, c_post = render_subject(subj)
    a_rel, p_rel, uid = write_study(subj, ant, post, (c_ant, c_post), Path(out), DICOM_DIR,
                                    opts["layout"], opts["transfer_syntax"])  # fmt: skip
    row = {"subject_id": subj.subject_id, "age": subj.age, "sex": subj.sex,
           "anterior": a_rel, "posterior": p_rel, "study_uid": uid}  # fmt: skip
    nz, body = subj.nuisance, subj.body
    truth = {"subject_id": subj.subject_id, "age": subj.age, "sex": subj.sex,
             "b": round(subj.b, 4)}  # fmt: skip
    if site is not None:
        row[SITE_COLUMN] = site.site_id
        truth.update(site_index=site.index, site=site.site_id, fwhm_scale=site.fwhm_scale,
                     sensitivity=site.sensitivity, scatter=site.scatter,
                     matrix=f"{site.rows}x{site.columns}")  # fmt: skip
    truth.update({k: v if isinstance(v, int) else round(float(v), 5)
                  for k, v in subj.effects.truth().items()})  # fmt: skip
    truth.update(
        n_metastases=nz.n_metastases,
        injection_site=int(nz.injection is not None),
        urine_contamination=int(nz.contamination is not None),
        bladder_filling=round(nz.bladder, 4),
        counts_ant=int(c_ant),
        counts_post=int(c_post),
        height_mm=round(body.stature_mm - subj.effects.height_loss_mm, 1),
        stature_young_mm=round(body.stature_mm, 1),
        arm_abduction_deg=round(drawn_arm_abduction(body), 2),  # as drawn, not as sampled
        breast_scale=round(body.breast, 3),
    )
    return row, truth


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    write_csv(path, list(rows[0]), rows, lineterminator="\n")


def _demographics(truths: list[dict[str, Any]]) -> dict[str, Any]:
    ages = np.array([t["age"] for t in truths])
    n_f = sum(t["sex"] == "F" for t in truths)
    hist, edges = np.histogram(ages, bins=[40, 45, 50, 55, 60, 65, 70, 75, 81])
    return {
        "n_subjects": len(truths),
        "n_female": int(n_f),
        "n_male": int(len(truths) - n_f),
        "sex_ratio_f_to_m": round(n_f / max(len(truths) - n_f, 1), 3),
        "age": {
            "mean": round(float(ages.mean()), 2),
            "sd": round(float(ages.std()), 2),
            "min": int(ages.min()),
            "max": int(ages.max()),
            "quartiles": [float(q) for q in np.percentile(ages, [25, 50, 75])],
            "histogram": {f"{int(a)}-{int(b) - 1}": int(h)
                          for a, b, h in zip(edges[:-1], edges[1:], hist, strict=True)},
        },  # fmt: skip
    }


def _summary(
    opts: dict[str, Any], truths: list[dict[str, Any]], sites: tuple[Site, ...]
) -> dict[str, Any]:
    feats = np.array([[t[k] for k in EFFECT_COLUMNS] + [t["sex"] == "F"] for t in truths], float)
    ages = np.array([t["age"] for t in truths])
    prior_ages, prior = age_prior()
    prior_note = "generating age prior, sex-pooled (age independent of sex)"
    if sites:  # the generating prior is the mixture of the sites' priors, by their share
        shares = np.bincount([t["site_index"] for t in truths], minlength=len(sites))
        prior = sum(n * age_prior(s.age_shift)[1] for n, s in zip(shares, sites, strict=True))
        prior = prior / prior.sum()
        prior_note = ("generating age prior, the sites' priors mixed by their share of the "
                      "subjects, sex-pooled (the site is not used)")
    demo = _demographics(truths)
    info = {
        "generator": "bone_age.phantom",
        "version": VERSION,
        "seed": opts["seed"],
        "options": opts,
        "n_subjects": demo["n_subjects"],
        "n_female": demo["n_female"],
        "n_male": demo["n_male"],
        "sex_ratio_f_to_m": demo["sex_ratio_f_to_m"],
        "sex_ratio_target": FEMALE_TO_MALE,
        "age": demo["age"],
        "bayes_mae_floor": round(bayes_mae_floor(prior_ages, prior, opts["sigma"]), 4),
        "bayes_mae_floor_prior": prior_note,
        "oracle_mae": round(oracle_mae(feats, ages, seed=opts["seed"]), 4),
        "oracle_features": EFFECT_COLUMNS + ["sex"],
        "files": {"manifest": "manifest.csv", "truth": "truth.csv", "dicom_dir": DICOM_DIR},
    }
    if sites:
        info["sites"] = [s.info() | {"subjects": _demographics(
            [t for t in truths if t["site_index"] == s.index])} for s in sites]  # fmt: skip
    return info


def generate_cohort(
    out_dir: Path | str,
    subjects: int,
    seed: int,
    workers: int | None = None,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Generate a cohort into out_dir (created if needed); returns the manifest path.

    options: sigma (latent bone-age SD, years), variability (scale of the per-subject
    biological noise of every effect), layout ("two-frame" | "single-frame"),
    transfer_syntax ("explicit" | "rle"), sites (number of sites, each with its own camera and
    population; default 1: the reference camera and population, see ``sites.py``). workers
    does not change the output.
    """
    opts = cohort_options(subjects, seed, **options)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    (out / DICOM_DIR).mkdir(parents=True, exist_ok=True)
    for folder in (out, out / DICOM_DIR):  # the folders it writes files into, no others
        remove_stale_temps(folder)  # what a killed run left half-written
    workers = max(1, min(workers or usable_cores(), subjects))
    sites = make_sites(opts["seed"], opts.get("sites", 1))
    jobs = [(i, opts, str(out), sites[i % len(sites)] if sites else None)
            for i in range(subjects)]  # fmt: skip
    need = subjects * STUDY_BYTES
    free = shutil.disk_usage(out).free
    if need > free:  # refused before writing: a half-written cohort helps nobody
        raise BoneAgeError(f"{out}: {subjects} phantom subjects need about {need / 1e9:.1f} GB "
                           f"and {free / 1e9:.1f} GB are free; free space or choose fewer "
                           "subjects")
    if progress:
        say(f"phantom: generating {subjects} subjects with {workers} worker process(es), about "
            f"{size_text(need)} on disk ({size_text(free)} free)")
    bar = progress_display(total=subjects, desc="phantom", unit="subjects", enabled=progress)
    results = []
    if workers == 1:
        for job in jobs:
            results.append(_work(job))
            bar.update()
    else:
        # fork is fastest; if torch is loaded (training process with threads / CUDA), use a
        # fresh forkserver instead so workers never inherit its state. Output is identical.
        method = "forkserver" if "torch" in sys.modules else "fork"
        if method not in mp.get_all_start_methods():
            method = "spawn"
        with workers_starting():
            pool = mp.get_context(method).Pool(workers, initializer=_start_worker)
        with pool:
            for res in pool.imap(_work, jobs, chunksize=8):
                results.append(res)
                bar.update()
    bar.close()
    _write_csv(out / "manifest.csv", [r for r, _ in results])
    _write_csv(out / "truth.csv", [t for _, t in results])
    if progress:
        say("phantom: yardsticks (Bayes error floor, cross-validated oracle MAE)")
    # One thread: a second's worth of work gains nothing from more, and OpenMP threads stall
    # at barriers when other jobs share the cores (46-81 s instead of 0.9 s in the run).
    with heartbeat("phantom: yardsticks", enabled=progress), threadpool_limits(1):
        info = _summary(opts, [t for _, t in results], sites)
    write_text_atomic(out / "phantom_info.json", json.dumps(info, indent=2) + "\n")
    return out / "manifest.csv"


# A study on disk: two 1024 x 256 uint16 views plus headers (1,005 MB for 1,000 subjects,
# measured); the estimate a run prints before generating.
STUDY_BYTES = 2 * NROWS * NCOLS * 2 + 6_000


def cohort_yardsticks(manifest: Path | str) -> dict[str, float]:
    """The phantom's floor and oracle MAE for a cohort's manifest; empty for any other cohort.

    Read from ``phantom_info.json`` beside the manifest (written with the cohort, never
    recomputed); a missing or damaged file gives nothing rather than an error: the figures are
    context for the reader, not inputs.
    """
    try:
        info = json.loads((Path(manifest).parent / "phantom_info.json").read_text())
        floor, oracle = float(info["bayes_mae_floor"]), float(info["oracle_mae"])
    except (OSError, ValueError, TypeError, KeyError):
        return {}
    return {"phantom_floor_mae": floor, "phantom_oracle_mae": oracle}


def ensure_cohort(out_dir: Path | str, subjects: int, seed: int, **options: Any) -> Path:
    """Return out_dir/manifest.csv, generating the cohort only if missing or its options differ.

    Safe for concurrent callers: a file lock beside out_dir serialises them, and the cohort is
    built in a temporary sibling directory that is renamed into place only when complete.
    Extra keyword ``workers`` / ``progress`` are passed to generate_cohort.
    """
    out = Path(out_dir)
    run_kw = {k: options.pop(k) for k in ("workers", "progress") if k in options}
    want = cohort_options(subjects, seed, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        info = out / "phantom_info.json"
        if info.exists():
            try:
                if json.loads(info.read_text()).get("options") == want:
                    return out / "manifest.csv"
            except (OSError, ValueError):
                pass  # unreadable info: regenerate
        # Built in a folder beside OUT: one a killed run left is not removed (a user's folder
        # cannot be told from it); temp_path never reuses its name.
        tmp = temp_path(out, keep_suffix=False)
        tmp.mkdir()
        try:
            generate_cohort(tmp, subjects, seed, **run_kw, **options)
            if out.exists():  # stale cohort with other options: move aside, then delete
                old = temp_path(out.with_name(out.name + "-old"), keep_suffix=False)
                os.replace(out, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out / "manifest.csv"
