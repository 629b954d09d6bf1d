"""Walking a DICOM export: every path below it as an Instance (a file to classify, or a path
already failed with its status, so that none goes unreported), the views that --view and
--frames state for a path, and duplicate files marked.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from bone_age.data.instances import Instance
from bone_age.data.pseudonym import KeyFileError
from bone_age.utils.files import kind

T = TypeVar("T")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def walk_export(root: Path, skip: Sequence[Path], follow_outside: bool = False,
                secrets: Sequence[Path] = ()) -> Iterator[Instance]:
    """Every path under root as an Instance: plain files (and links to them) to classify, and
    the rest already failed with their status, so that none goes unreported.

    os.scandir rather than os.walk: each entry's type (link, folder, FIFO...) is needed, and a
    folder that cannot be listed must become a row, not a skipped subtree. Links to folders are
    followed, except into a folder already walked (a loop, or the same folder twice), and a
    link leading outside the export only with ``follow_outside`` (a link to / would index the
    whole machine). Outputs of the index and the secrets (the key) are never read, reached
    however: compared by their real paths, so a link to the output folder is no way in.
    """
    outputs = {os.path.normpath(p) for p in skip}
    real_outputs = {os.path.realpath(p) for p in skip}
    # The folders the outputs are written in (manifest, report): a link to one is no way in.
    output_folders = {os.path.realpath(os.path.dirname(p)) for p in skip
                      if os.path.isfile(p) or not os.path.exists(p)}
    real_secrets = {os.path.realpath(p) for p in secrets}
    real_root = os.path.realpath(root)
    root_stat = root.stat()
    walked = {(root_stat.st_dev, root_stat.st_ino)}
    stack: list[tuple[Path, str, frozenset]] = [(root, "", frozenset(walked))]
    while stack:
        folder, prefix, ancestors = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            rel = prefix.rstrip("/") or "."
            yield Instance(folder, rel).fail(
                "unreadable_folder",
                f"{rel}: folder cannot be listed ({err.strerror or type(err).__name__})")
            continue
        folders = []
        for entry in entries:
            path, rel = Path(entry.path), prefix + entry.name
            inst = Instance(path, rel)
            real = os.path.realpath(entry.path)
            if os.path.normpath(entry.path) in outputs or real in real_outputs or \
                    (entry.is_symlink() and real in output_folders):
                yield inst.fail("own_output", f"{rel}: written by this index, not indexed")
                continue
            if entry.is_symlink() and any(_inside(key, real) for key in real_secrets):
                # Whoever copies the export following its links would copy the key too.
                raise KeyFileError(f"{next(iter(secrets))}: the pseudonym key file is reachable "
                                   "through a symbolic link inside the export; move the key or "
                                   "remove the link")
            if entry.is_symlink() and not follow_outside and not _inside(real, real_root) \
                    and os.path.lexists(real):
                yield inst.fail("outside_export", f"{rel}: symbolic link leading outside the "
                                                  "export; not followed (--follow-links-outside "
                                                  "to index it)")
                continue
            try:
                st = os.stat(path)  # follows links
            except OSError as err:
                if entry.is_symlink():
                    why = "loops" if err.errno == errno.ELOOP else "points to nothing"
                    yield inst.fail("broken_link", f"{rel}: symbolic link that {why}")
                else:
                    yield inst.fail("unreadable", f"{rel}: cannot be read "
                                                  f"({err.strerror or type(err).__name__})")
                continue
            if stat.S_ISDIR(st.st_mode):
                ident = (st.st_dev, st.st_ino)
                if ident in ancestors:
                    yield inst.fail("link_loop", f"{rel}: link to a folder that contains it; "
                                                 "not followed")
                elif ident in walked:
                    yield inst.fail("duplicate", f"{rel}: a folder already indexed through "
                                                 "another path; not indexed twice")
                else:
                    walked.add(ident)
                    folders.append((path, rel + "/", ancestors | {ident}))
            elif stat.S_ISREG(st.st_mode):
                yield inst
            else:
                yield inst.fail("not_a_file", f"{rel}: {kind(st.st_mode)}; not read")
        stack.extend(reversed(folders))  # popped in name order


def stated_view(rel: str, stated: dict[str, T] | None) -> T | None:
    """The view --view (or the frames' views --frames) gives a path below the export: that of
    the deepest folder holding it."""
    found = [(len(folder), n) for n, folder in enumerate(stated or {})
             if not folder or rel.startswith(folder.rstrip("/") + "/")]
    return list(stated.values())[max(found)[1]] if stated and found else None


def mark_duplicates(instances: list[Instance]) -> None:
    """Fail as ``duplicate`` every file whose SOP Instance UID an earlier one (in the given
    order) carries."""
    first: dict[str, Instance] = {}
    for inst in instances:
        if inst.status or not inst.sop_uid:
            continue
        if inst.sop_uid in first:
            inst.fail("duplicate", f"{inst.rel}: same SOP Instance UID as "
                                   f"{first[inst.sop_uid].rel}, which is used instead")
        else:
            first[inst.sop_uid] = inst
