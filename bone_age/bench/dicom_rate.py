"""Item 3: DICOM decode + preprocess rate vs pydicom's bare pixel decoding of the same files.

Measured on the code path the cache runs (read_study_views + Preprocess, one torch thread as in
each cache worker) for the phantom's uncompressed two-frame files and, where ../shared is
present, one real clinical scan in five transfer syntaxes: how the ratio depends on the
decoder's own cost is the point.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import torch

from bone_age.bench.common import Ctx, entry, interleave, paired_ratio, rate
from bone_age.data.dicom import read_study_views
from bone_age.data.manifest import read_manifest
from bone_age.data.preprocess import Preprocess

REAL_DICOM = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-dicom"
REAL_SYNTAXES = {"NM1_UNC": "uncompressed", "NM1_RLE": "RLE", "NM1_JPLL": "JPEG lossless",
                 "NM1_JLSL": "JPEG-LS", "NM1_J2KR": "JPEG 2000"}


def _measure(ctx: Ctx, label: str, studies: list[dict[str, Path]], note: str) -> dict:
    pre = Preprocess((224, 224))
    files = [p for study in studies for p in dict.fromkeys(study.values())]  # each file once

    def bone_age_read() -> None:
        for study in studies:
            pre(read_study_views(study))

    def bare() -> None:
        for path in files:
            pydicom.dcmread(path).pixel_array  # noqa: B018

    times = interleave({"bone_age": bone_age_read, "pydicom": bare}, ctx.repeats)
    ratio, spread = paired_ratio(times["pydicom"], times["bone_age"])
    ours, _ = rate(len(studies), times["bone_age"])
    theirs, _ = rate(len(studies), times["pydicom"])
    return entry(
        f"3 DICOM read + preprocess / bare pydicom decode (studies/s), {label}", ratio, "ratio",
        0.8, ">=", spread=spread, repeats=ctx.repeats,
        note=(f"{note}; read_study_views + Preprocess to 224x224, 1 torch thread: {ours:.0f} "
              f"studies/s; dcmread().pixel_array of the same files: {theirs:.0f} studies/s "
              f"(medians, page cache warm)"),
        bone_age_studies_per_s=ours, pydicom_studies_per_s=theirs)


def run(ctx: Ctx) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        phantom, _ = read_manifest(ctx.cohort())
        phantom = [{"anterior": s.anterior, "posterior": s.posterior}
                   for s in phantom[: 8 if ctx.quick else 32]]
        out = [_measure(ctx, "phantom, uncompressed", phantom,
                        f"{len(phantom)} phantom studies, one two-frame 1024x256 uint16 file each")]
        for name, syntax in REAL_SYNTAXES.items():
            if (REAL_DICOM / name).exists():
                study = {"anterior": REAL_DICOM / name}
                out.append(_measure(ctx, f"real scan, {syntax}", [study] * 8,
                                    f"../shared real clinical NM1 ({syntax}), one 1024x256 int16 "
                                    f"view, 8 reads per repeat"))
        return out
    finally:
        torch.set_num_threads(threads)
