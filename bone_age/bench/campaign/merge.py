"""Merge visits' archives into the campaign folder (on the CPU, after the visits).

An archive comes from another machine: it is input, checked whole before anything is written.
Only ``visit.json`` and the small files of runs named as the campaign names them, each once,
regular files of sane size; every member's place is resolved once and must lie inside the
campaign's run folder. Each run's files are then read as ``table`` will read them (the
report's own checks: metrics.json a JSON object naming this run's model, loss and fold with a
finite MAE, predictions.csv finite ages, the settings readable), and the visit's record as
``next`` will. Only when every archive passes are the runs moved in (staged in the campaign
folder, then renamed; a failure puts back what was moved) and the records joined to
``visits.json``: all or nothing. A run already in the campaign is kept as it is (reported).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bone_age.bench.campaign.plan import (
    RUN_FILES,
    CampaignError,
    Run,
    check_visit,
    read_visits,
)
from bone_age.bench.campaign.visit import LOG_FILE
from bone_age.utils.errors import brief
from bone_age.utils.files import regular_file
from bone_age.utils.outputs import check_replaceable, write_text_atomic

MAX_MEMBER_BYTES = 64 * 2**20
# visit.json and at most every file of all 60 runs: a longer archive is not a visit's.
MAX_MEMBERS = 1 + 60 * (len(RUN_FILES) + 1)
STAGE_PREFIX = ".merge-"  # the staging folder in the campaign folder (outside runs/)


class ArchiveError(CampaignError):
    """A visit archive that cannot be merged (the message names the archive and the member)."""


@dataclass
class Visit:
    """One checked archive: its record and each run's files, by run name then file name."""

    archive: Path
    record: dict[str, Any]
    runs: dict[str, dict[str, bytes]] = field(default_factory=dict)


def _member_place(archive: Path, name: str, runs_root: Path) -> tuple[str, str] | None:
    """(run, file) of a run's member, None for visit.json; ArchiveError for anything else.

    The name is compared as written (no normalisation: ``runs/R//run.log`` and ``runs/R/./x``
    are refused, not read as ``runs/R/run.log``), and the place it would be written is resolved
    once and must lie inside the run's folder under ``runs_root`` (a link planted there, or in
    the campaign, would lead elsewhere).
    """
    if name == "visit.json":
        return None
    parts = name.split("/")
    run, file = (parts[1], "/".join(parts[2:])) if len(parts) >= 3 else ("", "")
    if parts[0] != "runs" or Run.parse(run) is None or file not in (*RUN_FILES, LOG_FILE):
        raise ArchiveError(f"{archive}: member {name!r} is not a file a visit writes "
                           f"(runs/<run>/<{' | '.join((*RUN_FILES, LOG_FILE))}>)")
    target = (runs_root / run / file).resolve()
    if not target.is_relative_to(runs_root / run) or target == runs_root / run:
        raise ArchiveError(f"{archive}: member {name!r} would be written to {target}, outside "
                           f"the campaign's run folder {runs_root / run}")
    return run, file


def _members(archive: Path, tar: tarfile.TarFile, runs_root: Path) -> dict[str, bytes]:
    """Each member's content, checked one by one as the archive is read (so that a huge or
    endless archive is refused at its first bad member, not after reading it all)."""
    content: dict[str, bytes] = {}
    for count, m in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise ArchiveError(f"{archive}: more than {MAX_MEMBERS} members; not a visit "
                               "archive")
        _member_place(archive, m.name, runs_root)
        if m.name in content:  # two of one name: the later would silently win
            raise ArchiveError(f"{archive}: member {m.name!r} appears twice")
        if not m.isfile() or m.size > MAX_MEMBER_BYTES:
            raise ArchiveError(f"{archive}: member {m.name!r} is not a regular file under "
                               f"{MAX_MEMBER_BYTES // 2**20} MiB")
        data = tar.extractfile(m).read(MAX_MEMBER_BYTES + 1)
        if len(data) != m.size:
            raise ArchiveError(f"{archive}: member {m.name!r} holds {len(data)} bytes, its "
                               f"header says {m.size}")
        content[m.name] = data
    return content


def read_archive(archive: Path, campaign: Path) -> Visit:
    """The archive's visit record and runs, every member and file checked; nothing written."""
    regular_file(archive, "visit archive", ArchiveError)  # a FIFO would block the merge
    runs_root = (campaign / "runs").resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            content = _members(archive, tar, runs_root)
    except (OSError, tarfile.TarError, EOFError, ValueError) as err:
        if isinstance(err, ArchiveError):
            raise
        raise ArchiveError(f"{archive}: not a readable visit archive ({brief(err)})") from None
    if "visit.json" not in content:
        raise ArchiveError(f"{archive}: no visit.json (not a visit archive)")
    try:
        record = json.loads(content.pop("visit.json").decode("utf-8"))
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, nested too deep
        raise ArchiveError(f"{archive}: visit.json is not JSON ({brief(err)})") from None
    check_visit(record, f"{archive}: visit.json")
    record["id"] = str(record["id"])
    visit = Visit(archive, record)
    for name, data in content.items():
        _, run, file = name.split("/", 2)
        visit.runs.setdefault(run, {})[file] = data
    finished = {r["name"] for r in record.get("runs", []) if r["finished"]}
    for run in sorted(set(visit.runs) | finished):
        if run not in finished:
            raise ArchiveError(f"{archive}: run {run} is in the archive, but visit.json does "
                               "not record it as finished")
        files = visit.runs.get(run, {})
        for needed in ("metrics.json", "predictions.csv"):
            if needed not in files:
                raise ArchiveError(f"{archive}: run {run} has no {needed}")
    return visit


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    for file, data in files.items():
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        (folder / file).write_bytes(data)


def _check_run(visit: Visit, run: str, folder: Path) -> None:
    """The staged run ``folder`` read as ``table`` reads it; ArchiveError naming the member."""
    from bone_age.evaluation.run_files import RunFileError, read_run

    where = f"{visit.archive}: runs/{run}"
    try:
        read = read_run(folder)
        if read is None:
            raise RunFileError("metrics.json: an evaluation of a trained model, not a run")
        metrics = read.metrics
    except (RunFileError, OSError) as err:
        # The report's message names the staged file; the user knows the archive's member.
        raise ArchiveError(f"{where}: {str(err).replace(str(folder) + os.sep, '')}") from None
    expected = Run.parse(run)
    claimed = {"model": metrics.get("model"), "loss": metrics.get("loss"),
               "fold": metrics.get("fold")}
    if claimed != {"model": expected.model, "loss": expected.loss, "fold": expected.fold}:
        raise ArchiveError(f"{where}/metrics.json: names model {claimed['model']!r}, loss "
                           f"{claimed['loss']!r}, fold {claimed['fold']!r}; the run's name "
                           f"says {expected.model}, {expected.loss}, {expected.fold}")
    mae = metrics.get("mae")
    if isinstance(mae, bool) or not isinstance(mae, (int, float)) or not (
            math.isfinite(mae) and mae >= 0):
        raise ArchiveError(f"{where}/metrics.json: mae {mae!r} is not a finite number >= 0 "
                           "(a diverged or damaged run)")
    if "calibration.json" in visit.runs[run]:
        try:
            ok = isinstance(json.loads(visit.runs[run]["calibration.json"]), dict)
        except (ValueError, RecursionError):
            ok = False
        if not ok:
            raise ArchiveError(f"{where}/calibration.json: not a JSON object")


def _place(campaign: Path, run: str) -> Path:
    """The run's folder in the campaign, refused when it is not a real folder of its own
    there (a link would move the run elsewhere)."""
    runs_root = (campaign / "runs").resolve()
    folder = campaign / "runs" / run
    if os.path.islink(folder) or (os.path.lexists(folder) and not folder.is_dir()):
        raise CampaignError(f"{folder}: not a folder (a link or a file); the run cannot be "
                            "merged there: move it away")
    if folder.exists() and folder.resolve() != runs_root / run:
        raise CampaignError(f"{folder}: lies outside {runs_root}; move it away")
    if folder.is_dir() and not (folder / "metrics.json").exists():
        # An unfinished run's folder (an older merge that stopped half-way) is replaced whole:
        # only when it holds nothing but files a visit writes, so no other file is deleted.
        ours = {*RUN_FILES, LOG_FILE}
        for path in sorted(folder.rglob("*")):
            name = path.relative_to(folder).as_posix()
            if not (name == ".hydra" and path.is_dir() and not path.is_symlink()) and not (
                    name in ours and path.is_file() and not path.is_symlink()):
                raise CampaignError(f"{path}: not a file a visit writes, in the unfinished run "
                                    f"folder {folder} that the merge would replace; move it "
                                    "away")
    return folder


def merge_all(archives: list[Path], campaign: Path) -> list[dict[str, Any]]:
    """Merge ``archives`` into ``campaign``: all of them or nothing (see the module's text).

    Returns, per archive, its visit id, the runs added and the runs kept (already in).
    """
    campaign = Path(campaign)
    visits = [read_archive(Path(a), campaign) for a in archives]  # nothing written yet
    known = read_visits(campaign / "visits.json")
    if (campaign / "runs").exists() and not (campaign / "runs").is_dir():
        raise CampaignError(f"{campaign / 'runs'}: a file, not the campaign's run folder")
    done: set[str] = set()
    plan: list[tuple[Visit, str]] = []
    summary = []
    for visit in visits:
        added, kept = [], []
        for run in sorted(visit.runs):
            folder = _place(campaign, run)
            if (folder / "metrics.json").exists() or run in done:
                kept.append(run)
                continue
            done.add(run)
            plan.append((visit, run))
            added.append(run)
        summary.append({"visit": visit.record["id"], "added": added, "kept": kept})
    for path in (campaign / "visits.json", campaign / "table1.md"):  # written at the end
        check_replaceable(path, "campaign file")
    records = list(known)
    for visit in visits:
        if all(str(v.get("id")) != visit.record["id"] for v in records):
            records.append(visit.record)
    created = [p for p in (campaign, *campaign.parents) if not p.exists()]
    campaign.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=campaign))
    moved: list[tuple[Path, Path | None]] = []  # (run folder, where its old content went)
    try:
        for visit, run in plan:  # staged and checked, every run, before any is moved in
            _write_files(stage / "new" / run, visit.runs[run])
            _check_run(visit, run, stage / "new" / run)
        (campaign / "runs").mkdir(exist_ok=True)
        try:
            for _, run in plan:
                folder = campaign / "runs" / run
                old = None
                if folder.exists():  # a run folder without metrics.json: replaced whole
                    old = stage / "old" / run
                    old.parent.mkdir(exist_ok=True)
                    os.rename(folder, old)
                moved.append((folder, old))
                os.rename(stage / "new" / run, folder)
            if len(records) > len(known):
                write_text_atomic(campaign / "visits.json", json.dumps(records, indent=2) + "\n")
        except BaseException:
            for folder, old in reversed(moved):  # put back what was there
                if folder.exists():
                    shutil.rmtree(folder)
                if old is not None:
                    os.rename(old, folder)
            raise
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # a refused merge leaves no trace, not even the folder
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)
    return summary


def merge(archive: Path, campaign: Path) -> dict[str, Any]:
    """Add one archive's finished runs and its record; returns what was added and kept."""
    return merge_all([archive], campaign)[0]
