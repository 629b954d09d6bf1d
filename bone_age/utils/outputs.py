"""Output files of the commands: checked before any work, written whole or not at all.

A command checks each place it will write (``check_output_file`` / ``check_output_dir``) before
it reads a model or decodes a study, so a typo in ``--out`` costs nothing; each file is then
written to a temporary name in its folder and renamed into place (atomic on POSIX), so a crash
or a full disk never leaves a half-written file under the final name. Outputs are written only
to regular files or new paths: a FIFO or device named as an output is refused, never replaced.

Temporary names say whose they are (``.NAME.bone-age-tmp.<host>-<pid>-<n>[.suffix]``): the next
run writing into a folder removes the temporary *files* a killed run of this host and user left
there (``remove_stale_temps``), and nothing else: never a folder, a link, a live process's file,
or a name without the ``bone-age-tmp`` marker (no user writes one; ``.thesis.docx.2024.tmp`` is
a user's file).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import re
import shutil
import socket
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bone_age.utils.errors import BoneAgeError
from bone_age.utils.files import not_regular


class OutputError(BoneAgeError):
    """An output location that cannot be written (message names it and why)."""


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists; a file on the way is an error."""
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
        if parent.is_symlink():  # a dangling link: creating under it fails
            return parent
    return Path(path.anchor or ".")


def _check_creatable(path: Path, what: str) -> None:
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        what_is = "a broken link" if base.is_symlink() and not base.exists() else "a file"
        raise OutputError(f"{path}: cannot write the {what}: {base} is {what_is}, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write the {what}: folder {base} is not writable")


def check_output_file(
    path: str | Path, what: str = "output", inputs: Sequence[str | Path] = (),
    input_dirs: Sequence[str | Path] = (),
) -> Path:
    """``path`` if a file can be written there (now, before any work); else OutputError.

    Args:
        path: the file to be written (its folders may not exist yet).
        what: what the file is, for the message (``predictions``, ``ONNX model``...).
        inputs: files the command reads (model, manifest...): never to be replaced.
        input_dirs: folders the command reads (a DICOM export): nothing is written inside.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: cannot write the {what}: it is a folder")
    check_replaceable(path, what)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: cannot write the {what}: the file is read-only")
    _check_creatable(path, what)
    check_not_input(path, what, inputs, input_dirs)
    return path


def check_not_input(path: Path, what: str, inputs: Sequence[str | Path],
                    input_dirs: Sequence[str | Path] = ()) -> None:
    """OutputError when ``path`` is one of the input files or lies inside an input folder
    (a DICOM export: an output there could replace a scan, and would be read as one)."""
    target = Path(path).resolve()
    for folder in map(Path, input_dirs):
        if folder.is_dir() and target.is_relative_to(folder.resolve()):
            raise OutputError(f"{path}: the {what} would be written inside the input folder "
                              f"{folder}; give a place outside it")
    for source in map(Path, inputs):
        if source.is_file() and target == source.resolve():
            raise OutputError(f"{path}: the {what} would overwrite the input {source}; "
                              "give another --out")


def check_outside_scan_folders(path: str | Path, what: str,
                               scans: Iterable[str | Path]) -> None:
    """OutputError when ``path`` lies inside the folder of a DICOM file the command reads (a
    single file given on the command line, or a manifest's studies): that folder is an export
    as much as a folder given whole, and an output there could replace a scan or be read as one.

    Both the folder the file is named in and the folder of the file it links to count. The
    message names the output only: the scan's folder may name the patient.
    """
    target = Path(path).resolve()
    seen: set[Path] = set()
    for scan in scans:
        scan = Path(scan)
        for folder in (scan.absolute().parent, scan.resolve().parent):
            if folder in seen:
                continue
            seen.add(folder)
            if target.is_relative_to(folder.resolve()):
                raise OutputError(f"{path}: the {what} would be written inside the folder of an "
                                  "input DICOM file (outputs never go among the scans they are "
                                  "made from); give a place outside it")


def check_replaceable(path: str | Path, what: str = "output") -> None:
    """OutputError when ``path`` exists as anything but a regular file (a FIFO, a device, a
    socket; a link to one): replacing it by a file would destroy it, writing into it would
    block or vanish."""
    if os.path.lexists(path) and not Path(path).is_dir():
        why = not_regular(path)
        if why is not None and why != "does not exist":  # a dangling link is replaced
            raise OutputError(f"{path}: cannot write the {what}: it {why}; give a regular "
                              "file or a new path")


def check_output_dir(path: str | Path, what: str = "outputs") -> Path:
    """``path`` if files can be written into it (creating it if needed); else OutputError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: cannot write the {what}: it is a file, not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: cannot write the {what}: the folder is not writable")
    else:
        _check_creatable(path / "x", what)
    return path


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_SERIAL = itertools.count()
# The word in every temporary name this package makes, and in no name a user or another program
# writes: the proof, with the host, the process and the owner, that a leftover file is ours.
TEMP_MARK = "bone-age-tmp"
# ".NAME.bone-age-tmp.<host>-<pid>-<n>[.suffix]"; ASCII digits only (\d takes other scripts').
_TEMP = re.compile(r"\..+\." + TEMP_MARK + r"\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-[0-9]+"
                   r"(?:\.[^.]+)?")


def temp_path(path: str | Path, keep_suffix: bool = True) -> Path:
    """A temporary name beside ``path`` that says whose it is (marker, host and process); with
    ``keep_suffix`` it ends in ``path``'s suffix, for writers that go by it (matplotlib).

    A name already taken (a folder a killed process of the same pid left, never removed) is
    skipped, so creating the returned path exclusively does not collide with it.
    """
    path = Path(path)
    suffix = path.suffix if keep_suffix else ""
    while True:
        tmp = path.with_name(f".{path.name}.{TEMP_MARK}.{_HOST}-{os.getpid()}-{next(_SERIAL)}"
                             f"{suffix}")
        if not os.path.lexists(tmp):
            return tmp


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM), or no pid at all
        return True  # either way: not provably a dead process of ours
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files in ``folder`` that a killed run left; returns what was removed.

    Call it only on a folder the command itself writes into. A file is removed only when all of
    this proves it ours: its name is one ``temp_path`` makes (with the ``bone-age-tmp`` marker),
    for this host (another host's process cannot be checked on a shared file system), of a
    process that is gone, and it is a regular file (not a link) owned by this user. Folders are
    never removed, whatever their name: a user's folder cannot be told from ours, and what is in
    it would go too.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # absent or unreadable: nothing of ours to clean
        return removed
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if not match or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            continue
        try:
            os.unlink(entry.path)
        except OSError:  # gone already, or not ours to remove after all
            continue
        removed.append(Path(entry.path))
    return removed


def stale_temp_folders(folder: str | Path) -> list[Path]:
    """Folders in ``folder`` named as this host's temporaries whose process is gone: never
    removed (``remove_stale_temps``), only listed, for a command to tell its user."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted(Path(e.path) for e in entries
                  if (m := _TEMP.fullmatch(e.name)) and m["host"] == _HOST
                  and e.is_dir(follow_symlinks=False) and not _alive(int(m["pid"])))


def replace(tmp: str | Path, path: str | Path, what: str = "output") -> Path:
    """``os.replace(tmp, path)`` unless ``path`` is a FIFO, device or socket (OutputError)."""
    check_replaceable(path, what)
    os.replace(tmp, path)
    return Path(path)


def _discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()


def write_all_atomic(writes: Iterable[tuple[str | Path, Callable[[Path], object]]],
                     keep_suffix: bool = True) -> list[Path]:
    """Write a set of files whole or not at all: each ``write(tmp)`` fills a temporary file;
    only when every one is written are they renamed into place (a failure removes them all,
    so a crash never leaves 2 of 3 figures).

    Args:
        writes: (final path, writer) pairs; the folders are created.
        keep_suffix: the temporary names end in the final suffix (see ``temp_path``).
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in writes:
            path = Path(path)
            check_replaceable(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(path, keep_suffix)
            # Created (the umask applies) before the writer opens it: the name is ours alone.
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            staged.append((tmp, path))
            write(tmp)
        for tmp, path in staged:
            replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if os.path.lexists(tmp):
                _discard(tmp)
    return [path for _, path in staged]


def write_atomic(path: str | Path, write: Callable[[Path], object],
                 keep_suffix: bool = True) -> Path:
    """Write ``path`` whole or not at all: ``write(tmp)`` fills a temporary file, renamed.

    The temporary file sits in the same folder (so the rename is atomic) and keeps the suffix
    (so writers that go by it, such as matplotlib, pick the same format).

    Args:
        path: the final file; its folders are created.
        write: called with the temporary path; writes the whole content there.
        keep_suffix: False where a glob for the suffix must not see the temporary file
            (``*.ckpt``).
    """
    return write_all_atomic([(path, write)], keep_suffix)[0]


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``write_atomic`` for UTF-8 text."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


LOCK_FILE = ".bone_age.lock"


def _lock_or_refuse(fd: int, mode: int, folder: str | Path, what: str, other: str) -> None:
    """``flock`` without waiting; OutputError naming the holder's process when another has it."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 20, 0).decode(errors="replace").strip()
        by = f" (process {owner})" if owner.isdigit() else ""
        raise OutputError(f"{folder}: the {what} is in use by another run{by}; wait for it to "
                          f"end or {other}") from None


def check_not_in_use(folder: str | Path, what: str = "run folder",
                     other: str = "give another hydra.run.dir") -> None:
    """OutputError when a live process holds ``folder``'s lock (``folder_lock``); writes
    nothing. For a check before anything is written into the folder (Hydra writes its
    ``.hydra/`` before the run takes the lock)."""
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return  # the lock itself will tell
    try:
        _lock_or_refuse(fd, fcntl.LOCK_SH, folder, what, other)
    finally:
        os.close(fd)


@contextmanager
def folder_lock(folder: str | Path, what: str = "run folder",
                other: str = "give another hydra.run.dir") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` while the block runs; OutputError at once when
    another process holds it (two runs in one folder would mix their outputs).

    ``fcntl.flock`` on ``folder/.bone_age.lock``: the OS releases it when its process ends,
    however it ends, so a run killed with SIGKILL leaves nothing that blocks ``resume=true``.
    The file keeps the holder's process id, for the message.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    check_replaceable(path, "lock file")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        _lock_or_refuse(fd, fcntl.LOCK_EX, folder, what, other)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
