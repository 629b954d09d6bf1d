"""The commands' argument parser and argument types: a bad command line is one line, exit 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from bone_age.utils.errors import BoneAgeError

# Upper bounds of the count arguments (docs/errors.md): beyond them a typo (1000000000 for
# 1000) would run for days or exhaust memory instead of ending in one line.
MAX_PHANTOM_SUBJECTS = 100_000  # python -m bone_age.phantom --subjects (4,474: ~2 min, 2 cores)
MAX_REALISM_SUBJECTS = 10_000  # python -m bone_age.phantom.realism --subjects (default 100)
MAX_SITES = 100  # python -m bone_age.phantom --sites
MAX_WORKERS = 1024  # --workers
MAX_BATCH_SIZE = 4096  # predict / evaluate --batch-size


class UsageError(BoneAgeError):
    """A bad command line (one line via ``errors.command``, exit 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that a bad command line ends as the command's one line
    (``bone-age <command>: <what is wrong> (see --help)``) instead of usage + error lines."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def positive_int(text: str) -> int:
    """A count >= 1 (``--subjects``, ``--workers``, ``--batch-size``, ...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def count(maximum: int) -> Callable[[str], int]:
    """An argparse type: a count in 1..``maximum``."""
    def parse(text: str) -> int:
        value = positive_int(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {value:,}")
        return value
    parse.__name__ = "count"  # argparse names the type in its message
    return parse


def finite_float(text: str) -> float:
    """A finite number (NaN and infinities refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (NaN and infinities refused)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value

