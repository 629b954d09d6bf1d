"""What an index did, in a few lines for the terminal (each file's status and reason are in
its report)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bone_age.data.index_outputs import CONTACT_SHEET
from bone_age.data.index_result import WRITTEN, IndexResult, anatomy_studies
from bone_age.utils.console import plural


def summary(result: IndexResult, sheet: Path | None = None) -> str:
    """What the index did, in a few lines; ``sheet``: where write_outputs put the contact sheet
    (beside the manifest), named when the anatomy decided a view."""
    counts = Counter(i.status for i in result.instances)
    n = len(result.written)
    rate = n / result.seconds if result.seconds > 0 else float("inf")
    lines = [f"{plural(len(result.instances), 'file')}, {plural(n, 'study')} written in "
             f"{result.seconds:.1f} s "
             f"({rate:.1f} studies/s)"]
    lines += [f"  {status:<22}{count:>7}" for status, count in sorted(counts.items())]
    if result.left_out:
        studies = [lo for lo in result.left_out if lo.study]
        files = len(result.left_out) - len(studies)
        parts = [f"{plural(len(studies), 'study')} left out"] if studies else []
        if files:
            parts.append(f"{plural(files, 'file')} that may hold a study left out")
        lines.append(" and ".join(parts) + ": each file's status and reason are in the report "
                                           "(exit 1)")
    anatomy = [i for i in result.instances if i.view_from == "anatomy" and i.status in WRITTEN]
    if anatomy:
        lines.append(f"{len(anatomy)} written files had no view in their headers: decided from "
                     "the anatomy (index_report.csv: view, view_from, view_margin)")
    studies = anatomy_studies(result)
    if studies:
        lines.append(f"{plural(len(studies), 'study')} with a view decided from the anatomy: "
                     "check that no study's views are swapped at a glance in "
                     f"{sheet if sheet is not None else 'MANIFEST' + CONTACT_SHEET} (its two "
                     "views side by side, front view with the face, back view with the spine)")
    if result.patient_paths:
        lines.append(f"{len(result.patient_paths)} of {len(result.instances)} paths below the "
                     "export name a patient (column names_patient): the report is for the data "
                     "owner only (the manifest uses pseudonymous links)")
    else:
        lines.append("no path below the export names a patient (checked against the "
                     "identifying fields of its files)")
    return "\n".join(lines)
