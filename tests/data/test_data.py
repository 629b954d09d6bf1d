"""Manifest checks, DICOM reading, preprocessing, the cache and the fold DataModule."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from bone_age.data import BoneAgeDataModule, DataError, ManifestError, read_manifest
from bone_age.data.cache import StudyCache
from bone_age.data.dicom import DicomReadError, frame_views, read_dataset, read_view
from bone_age.data.preprocess import Preprocess
from bone_age.data.sources import ManifestSource
from tests.conftest import SHARED_DICOM, needs_real_dicom


def write_manifest(path, rows, header=("subject_id", "age", "sex", "anterior", "posterior")):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def cohort_rows(manifest):
    with manifest.open() as f:
        return [[r["subject_id"], r["age"], r["sex"], r["anterior"], r["posterior"]]
                for r in csv.DictReader(f)]


def test_manifest_problems_are_reported_per_row(cohort, tmp_path):
    rows = cohort_rows(cohort)
    base = cohort.parent
    bad = [
        [rows[0][0], rows[0][1], "X", *rows[0][3:]],           # unknown sex code
        [rows[1][0], "sixty", rows[1][2], *rows[1][3:]],        # age not a number
        [rows[2][0], rows[2][1], rows[2][2], "missing.dcm", rows[2][4]],  # no such file
        rows[3], rows[3],                                        # duplicate subject
        [rows[4][0], "", rows[4][2], *rows[4][3:]],             # no age: kept for prediction
    ]
    fixed = [[r[0], r[1], r[2], str(base / r[3]), str(base / r[4])] for r in bad]
    studies, problems = read_manifest(write_manifest(tmp_path / "m.csv", fixed))
    statuses = {p.status for p in problems}
    assert statuses == {"bad_sex", "bad_age", "missing_file", "duplicate"}
    assert [s.subject_id for s in studies] == [rows[3][0], rows[4][0]]
    assert studies[1].age is None
    assert all(f"row {p.row}" in str(p) for p in problems)


def test_manifest_missing_column_or_file_is_fatal(tmp_path):
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest(write_manifest(tmp_path / "m.csv", [], header=("subject_id", "age")))
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")


def test_two_frame_file_gives_each_view(cohort):
    study = read_manifest(cohort)[0][0]
    ds = read_dataset(study.anterior)
    assert frame_views(ds) == {"anterior": 0, "posterior": 1}
    ant, post = read_view(study.anterior, "anterior"), read_view(study.anterior, "posterior")
    assert ant.shape == post.shape == (1024, 256)
    assert not np.array_equal(ant, post)


def test_unreadable_files_give_one_line_errors(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom file at all")
    with pytest.raises(DicomReadError, match="junk.dcm: not a readable DICOM"):
        read_view(junk, "anterior")
    with pytest.raises(DicomReadError, match="does not exist"):
        read_view(tmp_path / "gone.dcm", "anterior")


@needs_real_dicom
def test_real_scan_reads_identically_in_all_transfer_syntaxes():
    arrays = {name: read_view(SHARED_DICOM / name, "anterior")
              for name in ("NM1_UNC", "NM1_RLE", "NM1_JPLL", "NM1_JLSL", "NM1_J2KR")}
    ref = arrays["NM1_UNC"]
    assert ref.shape == (1024, 256) and 3.5e6 < ref.sum() < 3.7e6
    for name, arr in arrays.items():
        assert np.array_equal(arr, ref), name


def test_preprocess_keeps_counts_and_mirrors_posterior():
    rng = np.random.default_rng(0)
    ant = rng.poisson(3.0, (1024, 256)).astype(np.float32)
    post = np.zeros((1024, 256), np.float32)
    post[:, :10] = 5.0  # patient's left on the image's left in a posterior view
    out = Preprocess((128, 64), "stretch", mirror_posterior=True)({"anterior": ant,
                                                                    "posterior": post})
    assert out.shape == (2, 128, 64)
    assert out[0].sum() == pytest.approx(ant.sum(), rel=1e-4)
    assert out[1][:, -1].sum() > 0 and out[1][:, 0].sum() == 0
    padded = Preprocess((224, 224), "pad")({"anterior": ant})
    assert padded[0, :, :80].sum() == 0 and padded.sum() == pytest.approx(ant.sum(), rel=1e-5)


@pytest.mark.parametrize("shape, size", [((1024, 256), (224, 224)), ((1023, 250), (224, 224)),
                                         ((100, 40), (224, 96)), ((512, 128), (448, 112))])
def test_box_resampling_keeps_every_count_where_it_was(shape, size):
    rng = np.random.default_rng(1)
    counts = rng.poisson(4.0, shape).astype(np.float32)
    counts[: shape[0] // 4] = 0  # an empty top quarter stays empty (up to one boundary row)
    out = Preprocess(size, mirror_posterior=False)({"anterior": counts})[0]
    assert out.shape == size and out.sum() == pytest.approx(counts.sum(), rel=1e-5)
    assert out[: size[0] // 4 - 1].sum() == 0
    # Against the area resampling written out pixel by pixel for one output row.
    r = size[0] // 2
    y0, y1 = r * shape[0] / size[0], (r + 1) * shape[0] / size[0]
    x_edges = np.arange(size[1] + 1) * shape[1] / size[1]
    expected = [sum(max(0.0, min(y1, i + 1) - max(y0, i)) * max(0.0, min(x_edges[c + 1], j + 1)
                    - max(x_edges[c], j)) * counts[i, j]
                    for i in range(int(y0), min(shape[0], int(np.ceil(y1))))
                    for j in range(int(x_edges[c]), min(shape[1], int(np.ceil(x_edges[c + 1])))))
                for c in range(size[1])]
    np.testing.assert_allclose(out[r], expected, rtol=1e-4, atol=1e-3)


def test_cache_hits_and_invalidates(cohort, tmp_path):
    studies = read_manifest(cohort)[0][:3]
    cache = StudyCache(tmp_path / "c", Preprocess((32, 16)), ("anterior", "posterior"))
    keys = cache.build(studies, progress=False)
    assert all(cache.entry(k).exists() for k in keys)
    assert cache.build(studies, progress=False) == keys  # same files and settings: same entries
    other = StudyCache(tmp_path / "c", Preprocess((32, 16), mirror_posterior=False),
                       ("anterior", "posterior"))
    assert set(other.build(studies, progress=False)).isdisjoint(keys)
    copy = tmp_path / "copy.dcm"
    shutil.copy(studies[0].anterior, copy)
    with copy.open("r+b") as f:  # change one pixel byte: a different file, a different entry
        f.seek(-100, 2)
        f.write(b"\x07")
    changed = studies[0].__class__(**{**studies[0].__dict__, "anterior": copy,
                                      "posterior": copy})
    assert cache.key(changed) != keys[0]


def test_cache_entries_are_whole_and_a_killed_builds_leftovers_go(cohort, tmp_path,
                                                                  monkeypatch):
    import subprocess

    import bone_age.data.cache as cache_module
    from bone_age.utils import outputs

    studies = read_manifest(cohort)[0][:2]
    cache = StudyCache(tmp_path / "c", Preprocess((32, 16)), ("anterior", "posterior"))
    keys = [cache.key(s) for s in studies]
    proc = subprocess.Popen(["true"])
    proc.wait()  # a build process that was killed: its half-written entry stays behind
    leftover = cache.entry(keys[0]).with_name(
        f".{keys[0]}.npy.{outputs.TEMP_MARK}.{outputs._HOST}-{proc.pid}-0")
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")

    def full_disk(file, array):
        Path(file).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module.np, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        cache.build(studies[:1], progress=False)
    assert list(leftover.parent.iterdir()) == []  # the leftover removed, no entry half-written
    monkeypatch.undo()
    assert cache.build(studies, progress=False) == keys
    assert sorted(p.name for p in cache.entry(keys[0]).parent.iterdir()) == [f"{keys[0]}.npy"]


def test_datamodule_leaves_out_bad_studies_with_reasons(cohort, tmp_path):
    rows = cohort_rows(cohort)
    base = cohort.parent
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"garbage")
    fixed = [[r[0], r[1], r[2], str(base / r[3]), str(base / r[4])] for r in rows]
    fixed[0][3] = fixed[0][4] = str(junk)   # unreadable
    fixed[1][1] = "85"                      # outside the 40-80 class range
    fixed[2][1] = ""                        # no age
    manifest = write_manifest(tmp_path / "m.csv", fixed)
    dm = BoneAgeDataModule(ManifestSource(str(manifest)), Preprocess((32, 16)),
                           cache_dir=str(tmp_path / "cache"), cache_workers=0, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    assert {p.status for p in dm.problems} == {"unreadable", "age_range", "no_age"}
    assert len(dm.studies) == len(rows) - 3
    parts = [set(dm.splits[k]) for k in ("train", "val", "test")]
    assert sum(map(len, parts)) == len(dm.studies) and not (parts[0] & parts[2])
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (len(dm.splits["train"]), 2, 32, 16)
    strict = BoneAgeDataModule(ManifestSource(str(manifest)), Preprocess((32, 16)),
                               cache_dir=str(tmp_path / "cache"), cache_workers=0,
                               progress=False, strict=True, batch_size=8)
    with pytest.raises(DataError, match="3 studies cannot be used") as err:
        strict.setup("fit")
    assert "\n" not in str(err.value)  # one line on the terminal


def test_identical_unreadable_files_each_name_their_own_path(cohort, tmp_path):
    """The cache keys a failure by content: copies of one broken file share it, but each study
    is reported with its own file (then and in a later run reading the cache)."""
    rows = cohort_rows(cohort)
    base = cohort.parent
    fixed = [[r[0], r[1], r[2], str(base / r[3]), str(base / r[4])] for r in rows]
    junk = []
    for i, name in enumerate(("first", "second")):
        path = tmp_path / name / "scan.dcm"
        path.parent.mkdir()
        path.write_bytes(b"the same garbage")
        fixed[i][3] = fixed[i][4] = str(path)
        junk.append(path)
    manifest = write_manifest(tmp_path / "m.csv", fixed)
    for _ in range(2):  # building the cache, then reading it
        dm = BoneAgeDataModule(ManifestSource(str(manifest)), Preprocess((32, 16)),
                               cache_dir=str(tmp_path / "cache"), cache_workers=0,
                               progress=False)
        dm.setup("fit")
        reasons = {p.subject_id: p.reason for p in dm.problems}
        assert reasons[fixed[0][0]].startswith(f"{junk[0]}: ")
        assert reasons[fixed[1][0]].startswith(f"{junk[1]}: ")
