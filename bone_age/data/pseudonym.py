"""Keyed pseudonyms: HMAC-SHA256 of Patient ID / Study UID / site under a secret key kept on disk.

The same key maps the same patient to the same pseudonym across exports; without the key the
mapping can neither be reversed nor recomputed (a plain hash of an ID could be, by trying IDs).
The key lives in a local file outside the repository and every output folder, created with
0600 permissions on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import sys
from pathlib import Path

from bone_age.utils.errors import BoneAgeError
from bone_age.utils.files import regular_file

DEFAULT_KEY_FILE = Path("~/.config/bone-age/pseudonym.key")
SUBJECT_PREFIX = "BA-"
STUDY_PREFIX = "ST-"
SITE_PREFIX = "SITE-"
DIGITS = 16  # hex digits kept: 64 bits, collisions negligible for any hospital's patients
SITE_DIGITS = 8  # a cohort has a handful of sites: short enough to read in a table


class KeyFileError(BoneAgeError, ValueError):
    """The key file cannot be created, read or is in an unsafe place."""


def exposure_warning(path: str | Path) -> str | None:
    """A one-line warning when an existing key file is readable or writable by group or
    others (anyone who can read the key can recompute every pseudonym), else None."""
    path = Path(path).expanduser()
    mode = path.stat().st_mode
    if not mode & 0o077:
        return None
    return (f"{path}: pseudonym key is accessible to group/others (mode "
            f"{stat.filemode(mode)}); restrict it with: chmod 600 {path}")


def load_or_create_key(path: str | Path) -> bytes:
    """The secret key in ``path`` (hex text), created with 0600 permissions if absent.

    An existing key readable by others is still used (refusing would stop a whole cohort's
    work), with a warning line on stderr that says how to fix it.
    """
    path = Path(path).expanduser()
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # O_EXCL: never overwrite a key another process created meanwhile.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        except FileExistsError:
            pass
        except OSError as err:
            raise KeyFileError(f"{path}: cannot create the pseudonym key ({err})") from None
    regular_file(path, "pseudonym key file", KeyFileError)  # a FIFO would block the read
    try:
        text = path.read_text().strip()
        key = bytes.fromhex(text)
    except (OSError, ValueError) as err:
        raise KeyFileError(f"{path}: not a readable pseudonym key file ({err})") from None
    if len(key) < 16:
        raise KeyFileError(f"{path}: pseudonym key is too short ({len(key)} bytes, need >= 16)")
    warning = exposure_warning(path)
    if warning:
        print(f"bone-age: warning: {warning}", file=sys.stderr)
    return key


class Pseudonymizer:
    """Maps Patient IDs and Study Instance UIDs to pseudonyms under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _digest(self, kind: str, value: str) -> str:
        # The kind is mixed in so a patient ID and a study UID never share a pseudonym.
        msg = f"{kind}\x00{value.strip()}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:DIGITS]

    def subject(self, patient_id: str) -> str:
        return SUBJECT_PREFIX + self._digest("patient", patient_id)

    def study(self, study_uid: str) -> str:
        return STUDY_PREFIX + self._digest("study", study_uid)

    def site(self, site: str) -> str:
        """The pseudonym of a site (``bone_age.data.labels.study_site``); "" for none."""
        return SITE_PREFIX + self._digest("site", site)[:SITE_DIGITS] if site else ""


def check_secret_location(path: str | Path, outputs: list[Path], what: str) -> Path:
    """Refuse a key or link file inside an output folder or a git work tree (it would be shared
    or committed along with them)."""
    path = Path(path).expanduser().resolve()
    for folder in outputs:
        if path.is_relative_to(folder.resolve()):
            raise KeyFileError(f"{path}: the {what} must not be inside {folder}")
    for parent in path.parents:
        if (parent / ".git").exists():
            raise KeyFileError(f"{path}: the {what} must not be inside the git repository "
                               f"{parent}")
    return path
