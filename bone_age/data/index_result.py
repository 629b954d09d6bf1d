"""What an index of a DICOM export found: every status of its report, the studies, the studies
left out, the exit code of every command that reads an export.

Shared by the walk (index_walk.py), the assembly of studies (index_studies.py), the outputs
(index_outputs.py) and the summary (index_summary.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bone_age.data.dicom import View
from bone_age.data.identifiers import PathChecker
from bone_age.data.instances import Instance
from bone_age.utils.errors import EXIT_OK, EXIT_PARTIAL

# The statuses of a study written to the manifest (the last three are warnings).
WRITTEN = ("ok", "no_age", "age_out_of_range", "unknown_sex")

# Every status of the report, with its meaning (the README lists these).
STATUSES = {
    # a study that is written to the manifest (the last three are warnings)
    "ok": "written to the manifest",
    "no_age": "written with an empty age: no usable Patient's Age or birth and study dates "
              "(can be predicted, not trained on)",
    "age_out_of_range": "written with its age, which lies outside --age-range (training "
                        "leaves it out and says so)",
    "unknown_sex": "written with an empty sex: Patient's Sex is not F or M",
    # a path that gives no view
    "unreadable_folder": "a folder that cannot be listed (e.g. permission denied); its "
                         "contents are unknown",
    "broken_link": "a symbolic link whose target is missing or loops",
    "link_loop": "a link to a folder that contains it (not followed)",
    "not_a_file": "a FIFO, socket or device: not read",
    "own_output": "an output of this index (manifest, report, links/, split/) inside the export "
                  "or reached through a link: not read",
    "outside_export": "a symbolic link leading outside the export: not followed (unless "
                      "--follow-links-outside)",
    "dicomdir": "a DICOMDIR index file",
    "not_dicom": "not a DICOM file",
    "unreadable": "a damaged or truncated file, or a header value that cannot be used",
    "duplicate": "the same SOP Instance UID as another file (or a folder reached twice), "
                 "which is used instead",
    "unsupported_modality": "not NM (or an NM-like secondary capture)",
    "unsupported_image": "a colour image, one larger than any whole-body scan, or one not "
                         "shaped like a whole-body view",
    "no_pixels": "no pixel data",
    "view_unknown": "no anterior or posterior view named in its headers, none given with "
                    "--view (one frame) or --frames (two frames), and the anatomy not sure",
    "not_side_by_side": "with --split-side-by-side: an image that is not NM or not shaped "
                        "like two whole-body views side by side, so not split",
    # a study that is not written (every file of it gets the status)
    "incomplete_study": "the anterior or the posterior view is missing",
    "ambiguous_view": "two files, or two frames of one file, claim the same view",
    "inconsistent_study": "its files carry different Patient IDs",
    "no_patient_id": "no Patient ID to derive a pseudonym from",
    "empty_image": "a view is all zero or not finite",
    "negative_counts": "a view has pixels below zero: not raw counts (processed, or read "
                       "with the wrong sign); refused rather than clipped",
    "repeat_study": "a later study of a subject already written (one study per subject)",
}


# Statuses of a path that holds no scan of its own (or one used through another path): leaving
# it out loses no study. Every other status not WRITTEN is a study (or a file that may hold
# one) left out, which makes every command that reads an export exit 1 (docs/errors.md).
NO_STUDY = frozenset({"dicomdir", "not_dicom", "own_output", "duplicate", "link_loop",
                      "not_a_file", "unsupported_modality"})


@dataclass
class LeftOut:
    """A study left out, named by its pseudonyms (or a file that may hold a study, whose
    header gave none: ``study`` empty), and why."""

    subject_id: str  # BA-... where a Patient ID was read, else ""
    study: str  # ST-... where a Study Instance UID was read, else ""
    reason: str
    files: int = 1


@dataclass
class StudyRow:
    key: str  # pseudonymous study key
    files: list[Instance]
    views: dict[View, Path] = field(default_factory=dict)
    subject_id: str = ""
    patient_id: str = ""  # only ever written to the owner's link file
    date: str = ""
    age: float | None = None
    sex: str = ""
    site: str = ""  # pseudonym
    status: str = ""
    reason: str = ""


@dataclass
class IndexResult:
    instances: list[Instance]
    studies: list[StudyRow]
    seconds: float
    patient_paths: set[str] = field(default_factory=set)  # relative paths naming a patient
    checker: PathChecker = field(default_factory=PathChecker)  # the export's identifiers
    left_out: list[LeftOut] = field(default_factory=list)  # studies not written, and why

    @property
    def written(self) -> list[StudyRow]:
        return sorted((s for s in self.studies if s.status in WRITTEN),
                      key=lambda s: s.subject_id)


def exit_code(result: IndexResult) -> int:
    """One rule for every command: 1 when any study was left out (or none written), else 0."""
    return EXIT_PARTIAL if result.left_out or not result.written else EXIT_OK


def anatomy_studies(result: IndexResult) -> list[StudyRow]:
    """The written studies with a view decided from the anatomy (no view in their headers)."""
    return [s for s in result.written if any(i.view_from == "anatomy" for i in s.files)]
