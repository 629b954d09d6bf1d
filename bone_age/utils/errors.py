"""Errors a user can fix (bad config, files or manifests): reported in one line, no traceback.

Every such error of the project derives from ``BoneAgeError``; each command's ``main`` is
wrapped by ``command`` (or, for the Hydra entry point, calls ``user_error_message``) so that
they end as one line ``bone-age <command>: <message>`` with exit code ``EXIT_BAD_INPUT``.
This module imports nothing heavy: the DICOM indexer imports it without torch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator

EXIT_OK = 0
EXIT_PARTIAL = 1  # finished, but some inputs were refused or nothing was found (reported)
EXIT_BAD_INPUT = 2  # nothing done: bad input, config, file, checkpoint or output location
EXIT_INTERRUPTED = 130  # ended by Ctrl-C (the shell's code for SIGINT)


def interrupted(command: str) -> int:
    """Ctrl-C's one line for ``command``; returns EXIT_INTERRUPTED. Outputs are written whole
    or not at all, so nothing half-written is left to mistake for a result."""
    print(f"bone-age {command}: interrupted (Ctrl-C); nothing half-written was kept",
          file=sys.stderr)
    return EXIT_INTERRUPTED


def _leave_quietly(signum: int, frame: object) -> None:
    os._exit(EXIT_INTERRUPTED)


def quiet_on_ctrl_c() -> None:
    """For a worker process's initializer: Ctrl-C (SIGINT to the terminal's whole process
    group) ends the worker at once and silently, not with a traceback of its own; the parent
    gets the same SIGINT and says so in one line. A temporary file the worker was writing is
    removed by the next command that writes there (docs/errors.md)."""
    signal.signal(signal.SIGINT, _leave_quietly)


@contextlib.contextmanager
def workers_starting() -> Iterator[None]:
    """Around the start of worker processes: they inherit SIGINT ignored (across exec too)
    until their initializer says otherwise (the cache's runs ``quiet_on_ctrl_c``; the phantom's
    keeps it ignored and leaves Ctrl-C to the parent), so a Ctrl-C while they start prints no
    traceback either. The parent's own handler is back before any work is handed out."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may change signal handlers
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class BoneAgeError(Exception):
    """Base of the errors a user can fix; the message is one line naming file/key and fault."""


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if len(lines) <= 1 else f"{lines[0]} ({'; '.join(lines[1:])})"


def brief(err: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), for one-line reports."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def user_error_message(err: BaseException) -> str | None:
    """The message of an error the user can fix, or None for a bug.

    Objects are built by Hydra's ``instantiate``, which wraps what their constructors raise;
    a ValueError or TypeError raised while building from config is a configuration mistake.
    Errors of OmegaConf/Hydra are only checked for when those are loaded (they are not for
    the light commands).
    """
    if isinstance(err, BoneAgeError):  # one line on the terminal, whatever the message holds
        return _one_line(str(err))
    if isinstance(err, OSError):  # a file or folder the user named or the system refused
        if err.filename is not None and err.strerror:
            return f"{err.filename}: {err.strerror}"
        return _one_line(str(err))
    omegaconf_errors = sys.modules.get("omegaconf.errors")
    if omegaconf_errors and isinstance(err, omegaconf_errors.OmegaConfBaseException):
        return _one_line(str(err))
    hydra_errors = sys.modules.get("hydra.errors")
    if hydra_errors and isinstance(err, hydra_errors.InstantiationException):
        cause = err.__cause__
        # Hydra ends its message with the node's key: the line names it, as every settings
        # error does, unless the object's own message already does.
        found = re.search(r"^full_key: (\S+)$", str(err), re.MULTILINE)
        key = found.group(1) if found else ""
        if cause is not None and (isinstance(cause, (ValueError, TypeError))
                                  or user_error_message(cause) is not None):
            message = user_error_message(cause) or _one_line(str(cause))
        else:
            # Never "Error in call to target ...:" cut off before the reason.
            first = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
            message = f"{first} {brief(cause)}" if cause is not None else first
        named = key and (re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", message)
                         or re.match(r"[A-Za-z_]\w*\.[\w.]+[\s:=]", message))  # a key first
        return message if not key or named else f"{key}: {message}"
    return None


def fail(command: str, message: str) -> int:
    """Print the one-line error of ``command`` to stderr; returns EXIT_BAD_INPUT."""
    print(f"bone-age {command}: {_one_line(message)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def command(name: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorator of a command's ``main(argv)``: a user error ends it with one line, exit 2.

    Args:
        name: the command as users type it after ``bone-age`` (``predict``, ``export``...).
    """
    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def guarded(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt:
                return interrupted(name)
            except Exception as err:
                message = user_error_message(err)
                if message is None:
                    raise
                return fail(name, message)
        return guarded
    return wrap
