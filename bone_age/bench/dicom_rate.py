"""Item 3: DICOM decode + preprocess rate vs pydicom's bare pixel decoding of the same files."""

from __future__ import annotations

import os

import pydicom
import torch

from bone_age.bench.common import Ctx, entry, interleave, paired_ratio, rate
from bone_age.data.dicom import read_dataset, read_view
from bone_age.data.manifest import read_manifest
from bone_age.data.preprocess import Preprocess


def run(ctx: Ctx) -> list[dict]:
    studies, _ = read_manifest(ctx.cohort())
    studies = studies[: 8 if ctx.quick else 32]
    pre = Preprocess((224, 224))

    def bone_age_read() -> None:
        for s in studies:
            ds = read_dataset(s.anterior)
            views = {v: read_view(getattr(s, v), v, ds) for v in ("anterior", "posterior")}
            pre(views)

    def bare() -> None:
        for s in studies:
            pydicom.dcmread(s.anterior).pixel_array  # noqa: B018

    out = []
    default_threads = torch.get_num_threads()
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        try:
            times = interleave({"bone_age": bone_age_read, "pydicom": bare}, ctx.repeats)
        finally:
            torch.set_num_threads(default_threads)
        ratio, spread = paired_ratio(times["pydicom"], times["bone_age"])
        ours, _ = rate(len(studies), times["bone_age"])
        theirs, _ = rate(len(studies), times["pydicom"])
        label = ("1 torch thread (one cache worker per core)" if threads == 1
                 else f"{threads} torch threads (torch's default here)")
        out.append(entry(
            f"3 DICOM read + preprocess / bare pydicom decode (studies/s), {label}", ratio,
            "ratio", 0.8, ">=", spread=spread, repeats=ctx.repeats,
            note=(f"{len(studies)} phantom studies (two-frame 1024x256 uint16, explicit VR), page "
                  f"cache warm; bone-age read_dataset + read_view x2 + Preprocess to 224x224: "
                  f"{ours:.1f} studies/s; dcmread().pixel_array: {theirs:.1f} studies/s "
                  f"(medians)"),
            torch_threads=threads, bone_age_studies_per_s=ours, pydicom_studies_per_s=theirs))
    return out
