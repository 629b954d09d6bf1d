"""Output files of the commands: checked before any work, written whole or not at all.

A command checks each place it will write (``check_output_file`` / ``check_output_dir``) before
it reads a model or decodes a study, so a typo in ``--out`` costs nothing; each file is then
written to a temporary name in its folder and renamed into place (atomic on POSIX), so a crash
or a full disk never leaves a half-written file under the final name. Outputs are written only
to regular files or new paths: a FIFO or device named as an output is refused, never replaced.

Temporary names say whose they are (``.NAME.<host>-<pid>-<n>.tmp[.suffix]``), so that the next
run can remove what a killed one left (``remove_stale_temps``) without touching another live
process's files.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import re
import shutil
import socket
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
# Ours: ".NAME.<host>-<pid>-<n>.tmp[.suffix]"; also ".NAME.<pid>.tmp", the cache's and the
# index's names before 2026-12-05 (a killed run of that code left them).
_TEMP = re.compile(r"^\..+\.(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-\d+|(?P<old>\d+))"
                   r"\.tmp(?:\.[^.]+)?$")


def temp_path(path: str | Path, keep_suffix: bool = True) -> Path:
    """A temporary name beside ``path`` that says whose it is (host and process); with
    ``keep_suffix`` it ends in ``path``'s suffix, for writers that go by it (matplotlib)."""
    path = Path(path)
    suffix = path.suffix if keep_suffix else ""
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{next(_SERIAL)}.tmp{suffix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM): alive
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` that a killed run of this host
    left (named by ``temp_path``, their process gone); returns what was removed.

    Only names of this host are judged: on a shared file system a process of another host
    cannot be checked, so its files are left alone.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # absent or unreadable: nothing of ours to clean
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if not match or match["host"] not in (None, _HOST):
            continue
        if _alive(int(match["pid"] or match["old"])):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed.append(Path(entry.path))
    return removed


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
