"""Merge a visit's archive into the campaign folder (on the CPU, after the visit).

The archive is checked before anything is written: only ``visit.json`` and the small files of
runs named as the campaign names them, regular files of sane size. A run already in the
campaign is kept as it is (reported); the visit's record joins ``visits.json`` once.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from bone_age.bench.campaign.plan import RUN_FILES, Run, read_visits
from bone_age.bench.campaign.visit import LOG_FILE
from bone_age.utils.errors import BoneAgeError
from bone_age.utils.outputs import write_text_atomic

MAX_MEMBER_BYTES = 64 * 2**20


class ArchiveError(BoneAgeError, ValueError):
    """A visit archive that cannot be merged (the message names the archive and the member)."""


def _checked(archive: Path, tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for m in tar.getmembers():
        parts = PurePosixPath(m.name).parts
        ok_name = m.name == "visit.json" or (
            len(parts) in (3, 4) and parts[0] == "runs" and Run.parse(parts[1]) is not None
            and "/".join(parts[2:]) in (*RUN_FILES, LOG_FILE))
        if not ok_name:
            raise ArchiveError(f"{archive}: member {m.name!r} is not a file a visit writes")
        if not m.isfile() or m.size > MAX_MEMBER_BYTES:
            raise ArchiveError(f"{archive}: member {m.name!r} is not a regular file under "
                               f"{MAX_MEMBER_BYTES // 2**20} MiB")
        members[m.name] = m
    if "visit.json" not in members:
        raise ArchiveError(f"{archive}: no visit.json (not a visit archive)")
    return members


def read_archive(archive: Path) -> tuple[dict[str, Any], dict[str, dict[str, bytes]]]:
    """The visit's record and each run's files (checked; nothing written)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _checked(archive, tar)
            content = {name: tar.extractfile(m).read() for name, m in members.items()}
    except (OSError, tarfile.TarError, EOFError) as err:
        raise ArchiveError(f"{archive}: not a readable visit archive ({err})") from None
    try:
        record = json.loads(content.pop("visit.json"))
        record["id"] = str(record["id"])
    except (ValueError, KeyError, TypeError) as err:
        raise ArchiveError(f"{archive}: visit.json is not a visit record ({err})") from None
    runs: dict[str, dict[str, bytes]] = {}
    for name, data in content.items():
        run, _, file = name.removeprefix("runs/").partition("/")
        runs.setdefault(run, {})[file] = data
    for run, files in runs.items():
        if "metrics.json" not in files:
            raise ArchiveError(f"{archive}: run {run} has no metrics.json")
    return record, runs


def merge(archive: Path, campaign: Path) -> dict[str, Any]:
    """Add the archive's finished runs and its record; returns what was added and kept."""
    record, runs = read_archive(archive)
    added, kept = [], []
    for run, files in sorted(runs.items()):
        folder = campaign / "runs" / run
        if (folder / "metrics.json").exists():
            kept.append(run)
            continue
        # metrics.json last: a run counts as done only once all its files are in.
        for file in sorted(files, key=lambda f: f == "metrics.json"):
            (folder / file).parent.mkdir(parents=True, exist_ok=True)
            (folder / file).write_bytes(files[file])
        added.append(run)
    visits = read_visits(campaign / "visits.json")
    if all(str(v.get("id")) != record["id"] for v in visits):
        visits.append(record)
        write_text_atomic(campaign / "visits.json", json.dumps(visits, indent=2) + "\n")
    return {"visit": record["id"], "added": added, "kept": kept}
