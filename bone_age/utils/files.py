"""What a path is: commands read and write regular files only.

A FIFO blocks a read forever, a character device may never end (or, as an output, be replaced
by a plain file), a socket cannot be opened: each user-named file is checked with ``os.stat``
(links followed) before it is opened, here, so that every command says the same in one line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bone_age.utils.errors import BoneAgeError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class InputFileError(BoneAgeError, ValueError):
    """A file a command was told to read is missing or not a regular file."""


def kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words ("a FIFO", "a character device"...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def not_regular(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a file ("does not exist", "is not a regular file (a
    FIFO)"...), or None when it is a regular file or a link to one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as err:  # a dangling link, a name too long, no permission on a folder
        return f"cannot be read ({err.strerror or type(err).__name__})"
    except ValueError:  # a NUL byte in the name
        return "is not a valid file name"
    return None if stat.S_ISREG(mode) else f"is not a regular file ({kind(mode)})"


def regular_file(path: str | Path, what: str, error: type[Exception] = InputFileError) -> Path:
    """``path`` if it is a regular file; else ``error`` ``"<path>: the <what> <why>"``.

    Args:
        path: the file a command will open.
        what: what it is, for the message (``"manifest"``, ``"checkpoint file"``...).
        error: the caller's error class (a BoneAgeError subclass), so callers keep catching
            what they did.
    """
    why = not_regular(path)
    if why is not None:
        raise error(f"{path}: the {what} {why}")
    return Path(path)
