"""CSV outputs: one writer, every cell safe to open in a spreadsheet, each file written whole.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` (also after a tab or a
carriage return) as a formula, so a pseudonym like ``=HYPERLINK(...)`` copied into an output
would act when the file is opened (CSV injection). OWASP's rule is applied to every text cell:
such a cell gets a leading single quote, which spreadsheets show as text. Numbers (``-3.25``,
``+1e3``, ``-inf``) are left as they are: a spreadsheet reads them as numbers, nothing runs.
Inputs are refused earlier (``formula_problem``, used by the manifest reader), so the quote
only ever guards files that were never meant to be read back.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bone_age.utils.outputs import write_text_atomic

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?|inf|infinity|nan)",
                     re.IGNORECASE)


def formula_like(text: str) -> bool:
    """True when a spreadsheet would run ``text`` as a formula (a number is not)."""
    return text.startswith(FORMULA_START) and not _NUMBER.fullmatch(text)


def formula_problem(text: str) -> str | None:
    """Why ``text`` may not be a pseudonym or site name (it would run in a spreadsheet), or
    None. The value itself is not quoted: it may be what the user mistyped for a real ID."""
    if not formula_like(text):
        return None
    shown = {"\t": "a tab", "\r": "a carriage return"}.get(text[0], repr(text[0]))
    return (f"starts with {shown}, which a spreadsheet runs as a formula; use pseudonyms that "
            "start with a letter or a digit")


def safe_cell(value: Any) -> Any:
    """``value`` as a CSV cell: a formula-like text gets a leading single quote."""
    return "'" + value if isinstance(value, str) and formula_like(value) else value


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any] | Mapping[str, Any]],
             first_line: str = "", lineterminator: str = "\r\n") -> str:
    """The CSV text of ``rows`` (sequences in header order, or mappings by column name)."""
    buffer = io.StringIO()
    if first_line:
        buffer.write(first_line + lineterminator)
    writer = csv.writer(buffer, lineterminator=lineterminator)
    writer.writerow([safe_cell(h) for h in header])
    for row in rows:
        cells = [row.get(h, "") for h in header] if isinstance(row, Mapping) else row
        writer.writerow([safe_cell(c) for c in cells])
    return buffer.getvalue()


def write_csv(path: str | Path, header: Sequence[str],
              rows: Sequence[Sequence[Any] | Mapping[str, Any]], **options: Any) -> Path:
    """``csv_text`` written whole or not at all (``write_text_atomic``)."""
    return write_text_atomic(path, csv_text(header, rows, **options))
