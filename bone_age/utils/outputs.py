"""Output files of the commands: checked before any work, written whole or not at all.

A command checks each place it will write (``check_output_file`` / ``check_output_dir``) before
it reads a model or decodes a study, so a typo in ``--out`` costs nothing; each file is then
written to a temporary name in its folder and renamed into place (atomic on POSIX), so a crash
or a full disk never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from bone_age.utils.errors import BoneAgeError


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
    path: str | Path, what: str = "output", inputs: Sequence[str | Path] = ()
) -> Path:
    """``path`` if a file can be written there (now, before any work); else OutputError.

    Args:
        path: the file to be written (its folders may not exist yet).
        what: what the file is, for the message (``predictions``, ``ONNX model``...).
        inputs: files the command reads (model, manifest...): never to be replaced.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: cannot write the {what}: it is a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: cannot write the {what}: the file is read-only")
    _check_creatable(path, what)
    for source in map(Path, inputs):
        if source.is_file() and path.resolve() == source.resolve():
            raise OutputError(f"{path}: the {what} would overwrite the input {source}; "
                              "give another --out")
    return path


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


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` whole or not at all: ``write(tmp)`` fills a temporary file, renamed.

    The temporary file sits in the same folder (so the rename is atomic) and keeps the suffix
    (so writers that go by it, such as matplotlib, pick the same format).

    Args:
        path: the final file; its folders are created.
        write: called with the temporary path; writes the whole content there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``write_atomic`` for UTF-8 text."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
