"""Tests of the phantom cohort simulator (bone_age.phantom)."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest

from bone_age.phantom import ensure_cohort, generate_cohort
from bone_age.phantom.body_plan import (
    ARM_MAX_ABDUCTION,
    CLOUD_SD,
    Geometry,
    arm_points,
    arm_radii,
    cloudy_gain,
    degenerative_sites,
    draw_soft_tissue,
    drawn_arm_abduction,
    facet_sites,
    kidney_centres,
    trunk_half,
)
from bone_age.phantom.effects import realise_effects, sample_noise
from bone_age.phantom.render import Canvas, fill_creases
from bone_age.phantom.subject import (
    age_prior,
    completed_years,
    render_subject,
    sample_demographics,
    sample_subject,
)
from bone_age.phantom.yardsticks import bayes_mae_floor, posterior_median

N_TWO, N_SINGLE, SEED = 24, 6, 5
ANT_CODE, POST_CODE = "399321004", "399001007"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def two_frame(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("two")
    generate_cohort(out, N_TWO, SEED, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def single_frame(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    generate_cohort(out, N_SINGLE, SEED, workers=1, progress=False, layout="single-frame")
    return out


def _check_common(ds: pydicom.Dataset, row: dict[str, str]) -> None:
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.20"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.Modality == "NM"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
    assert (ds.Rows, ds.Columns) == (1024, 256)
    assert [float(v) for v in ds.PixelSpacing] == [2.26, 2.26]
    assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
    assert ds.PatientID == row["subject_id"] and ds.PatientID.startswith("PH")
    assert str(ds.PatientName) == "PHANTOM^" + row["subject_id"][2:]
    assert ds.PatientSex == row["sex"] in ("F", "M")
    assert ds.PatientAge == f"{int(row['age']):03d}Y"
    assert ds.StudyInstanceUID == row["study_uid"]
    birth = pydicom.valuerep.DA(ds.PatientBirthDate)
    study = pydicom.valuerep.DA(ds.StudyDate)
    assert completed_years(birth, study) == int(row["age"])
    assert int(ds.CountsAccumulated) > 0


def _view_code(item: pydicom.Dataset) -> str:
    code = item.ViewCodeSequence[0]
    assert code.CodingSchemeDesignator == "SCT"
    return code.CodeValue


def test_two_frame_dicom(two_frame: Path) -> None:
    rows = _read_csv(two_frame / "manifest.csv")
    assert list(rows[0])[:5] == ["subject_id", "age", "sex", "anterior", "posterior"]
    assert len(rows) == N_TWO
    for row in rows:
        assert row["anterior"] == row["posterior"] and not Path(row["anterior"]).is_absolute()
        ds = pydicom.dcmread(two_frame / row["anterior"])
        _check_common(ds, row)
        assert ds.NumberOfFrames == 2 and ds.NumberOfDetectors == 2
        assert ds.FrameIncrementPointer == pydicom.tag.Tag(0x0054, 0x0020)
        assert list(ds.DetectorVector) == [1, 2]
        codes = [_view_code(d) for d in ds.DetectorInformationSequence]
        assert codes == [ANT_CODE, POST_CODE]
        px = ds.pixel_array
        assert px.shape == (2, 1024, 256) and px.dtype == np.uint16
        assert int(ds.CountsAccumulated) == int(px.sum(dtype=np.int64))


def test_single_frame_dicom(single_frame: Path) -> None:
    rows = _read_csv(single_frame / "manifest.csv")
    for row in rows:
        assert row["anterior"] != row["posterior"]
        for col, code, name in (("anterior", ANT_CODE, "ANT"), ("posterior", POST_CODE, "POST")):
            ds = pydicom.dcmread(single_frame / row[col])
            _check_common(ds, row)
            assert int(ds.get("NumberOfFrames", 1)) == 1
            assert _view_code(ds) == code
            assert _view_code(ds.DetectorInformationSequence[0]) == code
            assert ds.ImageID == name and name in ds.SeriesDescription
            assert ds.pixel_array.shape == (1024, 256) and ds.pixel_array.dtype == np.uint16


def test_layouts_hold_the_same_pixels(two_frame: Path, single_frame: Path) -> None:
    two = _read_csv(two_frame / "manifest.csv")[0]
    one = _read_csv(single_frame / "manifest.csv")[0]
    frames = pydicom.dcmread(two_frame / two["anterior"]).pixel_array
    ant = pydicom.dcmread(single_frame / one["anterior"]).pixel_array
    post = pydicom.dcmread(single_frame / one["posterior"]).pixel_array
    assert np.array_equal(frames[0], ant) and np.array_equal(frames[1], post)


def test_truth_and_info(two_frame: Path) -> None:
    truth = _read_csv(two_frame / "truth.csv")
    manifest = _read_csv(two_frame / "manifest.csv")
    assert [t["subject_id"] for t in truth] == [m["subject_id"] for m in manifest]
    for key in ("b", "global_uptake", "skull_uptake", "n_facet_foci", "renal_retention",
                "n_metastases", "counts_ant", "counts_post", "height_mm"):  # fmt: skip
        assert key in truth[0]
    info = json.loads((two_frame / "phantom_info.json").read_text())
    assert info["n_subjects"] == N_TWO and info["seed"] == SEED
    ages, prior = age_prior()
    assert info["bayes_mae_floor"] == pytest.approx(bayes_mae_floor(ages, prior, 3.0), abs=1e-3)
    assert 2.0 < info["bayes_mae_floor"] < 2.6
    assert np.isfinite(info["oracle_mae"])


def test_demographics() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_demographics(rng) for _ in range(20000)]
    ages = np.array([a for a, _ in draws])
    sexes = [s for _, s in draws]
    assert ages.min() == 40 and ages.max() == 80 and ages.dtype.kind == "i"
    assert set(sexes) == {"F", "M"}
    ratio = sexes.count("F") / sexes.count("M")
    assert 1.6 < ratio < 1.78
    assert 60 <= np.median(ages) <= 69  # oncology population peaking in the 60s


def test_determinism_and_worker_independence(two_frame: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_cohort(again, 4, SEED, workers=1, progress=False)  # prefix of the fixture cohort
    first = _read_csv(two_frame / "manifest.csv")[:4]
    assert _read_csv(again / "manifest.csv") == first
    assert _read_csv(again / "truth.csv") == _read_csv(two_frame / "truth.csv")[:4]
    for row in first:
        a = pydicom.dcmread(two_frame / row["anterior"])
        b = pydicom.dcmread(again / row["anterior"])
        assert a.PixelData == b.PixelData
    other = tmp_path / "other"
    generate_cohort(other, 2, SEED + 1, workers=2, progress=False)
    a = pydicom.dcmread(two_frame / first[0]["anterior"]).PixelData
    b = pydicom.dcmread(other / _read_csv(other / "manifest.csv")[0]["anterior"]).PixelData
    assert a != b


def test_rle_transfer_syntax(two_frame: Path, tmp_path: Path) -> None:
    generate_cohort(tmp_path, 1, SEED, workers=1, progress=False, transfer_syntax="rle")
    row = _read_csv(tmp_path / "manifest.csv")[0]
    ds = pydicom.dcmread(tmp_path / row["anterior"])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    ref = pydicom.dcmread(two_frame / row["anterior"]).pixel_array
    assert np.array_equal(ds.pixel_array, ref)


@pytest.mark.parametrize("seed", range(10))
def test_effect_model_directions(seed: int) -> None:
    """With the per-subject noise held fixed, b=45 -> b=78 moves every effect as published."""
    noise = sample_noise(np.random.default_rng(seed))
    for sex in ("F", "M"):
        young, old = realise_effects(45, sex, noise), realise_effects(78, sex, noise)
        for k in ("global_uptake", "skull_uptake", "shaft_uptake", "degenerative_intensity",
                  "facet_intensity", "sternal_variant", "soft_tissue_retention",
                  "renal_retention", "height_loss_mm"):  # fmt: skip
            assert getattr(old, k) > getattr(young, k), (sex, k)
        assert old.spine_pelvis_uptake < young.spine_pelvis_uptake
        assert old.kyphosis >= young.kyphosis
        assert old.n_degenerative_foci >= young.n_degenerative_foci
        assert set(young.deg_sites) <= set(old.deg_sites)
        assert old.n_facet_foci >= young.n_facet_foci


def _roi(img: np.ndarray, r: float, c: float, h: int = 4, w: int = 4) -> float:
    r, c = int(round(r)), int(round(c))
    patch = img[max(r - h, 0) : r + h + 1, max(c - w, 0) : c + w + 1]
    return float(patch.mean()) if patch.size else 0.0  # off-image (arm outside the field)


def _features(subj, joint_sites: tuple[int, ...] = ()) -> dict[str, float]:
    """Image features measured on the rendered frames at anatomical landmarks; joints at
    the candidate degenerative sites ``joint_sites`` only."""
    ant, post, _, _ = render_subject(subj)
    ant, post = ant.astype(float), post.astype(float)
    g = Geometry(subj.body, subj.effects)

    def mirror(c: float) -> float:  # posterior frame is mirrored left-right
        return 255 - c

    tot = ant.sum() + post.sum()
    lumbar = np.mean([_roi(post, g.row(z), mirror(g.col(0)), 3, 2) for z in (0.35, 0.38, 0.41)])
    femur = np.mean([_roi(post, g.row(0.6), mirror(g.col(s * 0.06)), 6, 1) for s in (-1, 1)])
    skull = _roi(post, g.row(0.02), mirror(g.col(0)), 2, 8)
    facets = facet_sites()
    fac_post = sum(_roi(post, g.row(z), mirror(g.col(x)), 1, 1) for z, x in facets) / tot
    fac_ant = sum(_roi(ant, g.row(z), g.col(x), 1, 1) for z, x in facets) / tot
    sites = degenerative_sites(subj.body)
    joints = sum(_roi(ant, g.row(sites[k][0]), g.col(sites[k][1]), 1, 1) for k in joint_sites)
    joints /= tot
    # Kidney-sized patches: a 7 x 7 one is within the Poisson noise for low renal retention.
    kidneys = sum(_roi(post, g.row(z), mirror(g.col(x)), 8, 5) for z, x in kidney_centres())
    sternum = _roi(ant, g.row(0.233), g.col(0), 2, 2) / tot
    return {
        "lumbar_over_femur": lumbar / femur,
        "skull_over_lumbar": skull / lumbar,
        "facets_post": fac_post,
        "facets_ant": fac_ant,
        "joints": joints,
        "kidneys": kidneys / tot,
        "sternum": sternum,
        "top_row": float(np.argmax(post.sum(axis=1) > 0.15 * post.sum(axis=1).max())),
    }


@pytest.fixture(scope="module")
def paired_features() -> list[tuple[dict[str, float], dict[str, float]]]:
    pairs = []
    for i in range(6):
        s = sample_subject(11, i)
        young, old = s.with_bone_age(45.0), s.with_bone_age(78.0)
        # Joints measured where the older self has foci the younger lacks (the effect's sites;
        # elsewhere the fixed count total and other regional effects dominate).
        new = tuple(sorted(set(old.effects.deg_sites) - set(young.effects.deg_sites)))
        pairs.append((_features(young, new), _features(old, new)))
    return pairs


def test_image_effects_same_subject(paired_features) -> None:
    """Render each subject at b=45 and b=78 (same body, nuisance and noise): the age effects
    must show in features measured on the images, in the expected directions."""
    for young, old in paired_features:
        assert old["lumbar_over_femur"] < young["lumbar_over_femur"]
        assert old["skull_over_lumbar"] > young["skull_over_lumbar"]
        assert old["joints"] >= young["joints"]
        assert old["kidneys"] > young["kidneys"]
        assert old["sternum"] > young["sternum"]
        assert old["top_row"] >= young["top_row"]  # height loss: the vertex moves down
    # Facet foci: more of them with age, and the gain is bigger in the posterior view.
    assert sum(o["joints"] > y["joints"] for y, o in paired_features) >= 4
    post_gain = np.mean([o["facets_post"] / y["facets_post"] for y, o in paired_features])
    ant_gain = np.mean([o["facets_ant"] / y["facets_ant"] for y, o in paired_features])
    assert post_gain > 1.2 and post_gain > ant_gain


def test_posterior_view_is_seen_from_behind() -> None:
    """A hot spot in the patient's left arm is image-right in ANT and image-left in POST."""
    s = sample_subject(3, 0)
    nz = dataclasses.replace(s.nuisance, injection=(1, 0.5, 30.0), metastases=(),
                             contamination=None)  # fmt: skip
    ant, post, _, _ = render_subject(dataclasses.replace(s, nuisance=nz))
    g = Geometry(s.body, s.effects)
    row = int(g.row(0.45))
    band_a, band_p = ant[row - 40 : row + 40].astype(float), post[row - 40 : row + 40]
    assert np.unravel_index(band_a.argmax(), band_a.shape)[1] > 128
    assert np.unravel_index(band_p.argmax(), band_p.shape)[1] < 128


def test_dates_consistent_with_age() -> None:
    for i in range(3000):
        s = sample_subject(9, i)
        assert completed_years(s.birth_date, s.study_date) == s.age
        assert 40 <= s.age <= 80 and s.sex in ("F", "M")


def test_bayes_floor_matches_monte_carlo() -> None:
    ages, prior = age_prior()
    rng = np.random.default_rng(0)
    sigma = 3.0
    a = rng.choice(ages, size=300_000, p=prior)
    b = a + rng.normal(0.0, sigma, size=a.size)
    mc = float(np.mean(np.abs(posterior_median(b, ages, prior, sigma) - a)))
    assert bayes_mae_floor(ages, prior, sigma) == pytest.approx(mc, abs=0.02)
    assert bayes_mae_floor(ages, prior, 0.0) == 0.0


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bone_age.phantom", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_cli_and_preview(tmp_path: Path) -> None:
    res = _cli("--out", str(tmp_path / "c"), "--subjects", "4", "--seed", "1",
               "--workers", "2", "--preview", str(tmp_path / "p.png"), "--no-progress")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert len(_read_csv(tmp_path / "c" / "manifest.csv")) == 4
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bare_preview_name_lands_beside_the_cohort(tmp_path: Path) -> None:
    """README's ``--preview preview.png`` wrote into the folder the command ran in (a checkout's
    root); it goes into --out."""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    cmd = [sys.executable, "-m", "bone_age.phantom", "--out", str(tmp_path / "c"),
           "--subjects", "2", "--workers", "1", "--preview", "preview.png", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "c" / "preview.png").is_file() and not list(elsewhere.iterdir())


@pytest.mark.parametrize("bad", [["--subjects", "0"], ["--subjects", "x"], ["--out", "FILE"],
                                 ["--layout", "three-frame"], ["--sigma", "-1"]])  # fmt: skip
def test_cli_bad_input(tmp_path: Path, bad: list[str]) -> None:
    f = tmp_path / "a_file"
    f.write_text("x")
    args = [str(f) if a == "FILE" else a for a in bad]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "o")]
    res = _cli(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()  # one line, the contract of every command
    assert len(lines) == 1 and lines[0].startswith("bone-age phantom: "), res.stderr


def test_ensure_cohort(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(
            ensure_cohort(out, 3, 2, workers=1, progress=False)))  # fmt: skip
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [out / "manifest.csv"] * 2
    stamp = (out / "phantom_info.json").stat().st_mtime_ns
    assert ensure_cohort(out, 3, 2, workers=1, progress=False) == out / "manifest.csv"
    assert (out / "phantom_info.json").stat().st_mtime_ns == stamp  # not regenerated
    ensure_cohort(out, 3, 2, workers=1, progress=False, layout="single-frame")
    assert json.loads((out / "phantom_info.json").read_text())["options"]["layout"] == (
        "single-frame"
    )
    assert len(list((out / "dicom").iterdir())) == 6
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_creases_filled_outline_kept() -> None:
    # Two discs that just overlap: a deep notch in thickness where they meet.
    yy, xx = np.mgrid[0:80, 0:120].astype(np.float32)
    disc = [np.sqrt(np.maximum(1 - ((yy - 40) ** 2 + (xx - cx) ** 2) / 30.0**2, 0)) * 200
            for cx in (32, 86)]  # fmt: skip
    drawn = np.maximum(*disc).astype(np.float32)
    filled = fill_creases(drawn)
    np.testing.assert_array_equal(filled > 0, drawn > 0)  # the outline does not move
    assert (filled >= drawn).all()
    assert filled[40, 59] > 1.25 * drawn[40, 59]  # the notch between the discs is filled
    assert filled[40, 32] == pytest.approx(drawn[40, 32], rel=0.02)  # a smooth top is kept


def test_soft_tissue_concentration_is_patchy() -> None:
    subj = sample_subject(SEED, 0)
    g = Geometry(subj.body, subj.effects)
    gains = []
    for _ in range(2):
        cv = Canvas()
        draw_soft_tissue(cv, subj.body, g)
        flat = cv.gain.copy()
        cloudy_gain(cv, np.random.default_rng(7))
        gains.append(cv.gain)
    np.testing.assert_array_equal(gains[0], gains[1])  # same stream, same texture
    inside = flat > 0
    log_ratio = np.log(gains[0][inside] / flat[inside])
    assert 0.5 * CLOUD_SD < log_ratio.std() < 1.5 * CLOUD_SD


def test_arms_clear_the_trunk_and_truth_records_the_drawn_angle(two_frame: Path) -> None:
    """The arm hangs beside the trunk with a skin gap (wide bodies open it further) and
    truth.csv reports the angle as drawn, not the sampled pose."""
    opened = 0
    for i in range(120):
        body = sample_subject(SEED, i).body
        drawn = drawn_arm_abduction(body)
        assert drawn >= body.arm_abduction - 1e-9  # never drawn closer than sampled
        opened += drawn > body.arm_abduction + 1.0
        for s in (-1, 1):
            sh, el, _, _ = arm_points(body, s)
            clear = abs(el[1]) - arm_radii(body)[1] - trunk_half(body, el[0])
            angle = np.degrees(np.arctan2(abs(el[1] - sh[1]), el[0] - sh[0]))
            assert clear > 0 or angle >= ARM_MAX_ABDUCTION - 1e-6  # a gap, or opened fully
    assert opened > 0  # some bodies are wide enough to open the arms
    for i, row in enumerate(_read_csv(two_frame / "truth.csv")):
        subj = sample_subject(SEED, i)
        assert row["subject_id"] == subj.subject_id
        body = subj.body
        assert float(row["arm_abduction_deg"]) == pytest.approx(drawn_arm_abduction(body),
                                                                abs=0.006)


def test_a_phantom_too_big_for_the_disk_is_refused_before_writing(tmp_path, monkeypatch,
                                                                     capsys):
    """Generation says its size on disk, and refuses in one line when it cannot fit."""
    from collections import namedtuple

    from bone_age.phantom import cohort
    from bone_age.utils.errors import BoneAgeError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cohort.shutil, "disk_usage", lambda p: usage(10**12, 0, 50 * 10**6))
    with pytest.raises(BoneAgeError, match=r"4474 phantom subjects need about 4\.7 GB and "
                                           r"0\.1 GB are free"):
        cohort.generate_cohort(tmp_path / "big", subjects=4474, seed=1, progress=False)
    assert not list((tmp_path / "big").rglob("*.dcm"))
    monkeypatch.setattr(cohort.shutil, "disk_usage", lambda p: usage(10**12, 0, 10**11))
    cohort.generate_cohort(tmp_path / "small", subjects=3, seed=1, workers=1, progress=True)
    assert "phantom: generating 3 subjects with 1 worker process(es), about 3 MB on disk" in \
        capsys.readouterr().err


def test_an_interrupted_phantom_leaves_no_truncated_scan_and_the_next_run_cleans_up(
        tmp_path, monkeypatch):
    import pytest
    from pydicom.dataset import Dataset

    from bone_age.phantom import dicom_writer
    from bone_age.phantom.cohort import generate_cohort
    from bone_age.utils import outputs

    def full_disk(self, path, **_):
        Path(path).write_bytes(b"DICM" * 3000)  # 12 KB of a scan, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Dataset, "save_as", full_disk)
    with pytest.raises(OSError, match="No space"):
        dicom_writer._save(Dataset(), np.zeros((2, 4, 4)), tmp_path / "PH000000.dcm", "explicit")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    proc = subprocess.Popen(["true"])
    proc.wait()  # a phantom run that was killed mid-file
    (tmp_path / "out" / "dicom").mkdir(parents=True)
    name = f".PH000000.dcm.{outputs.TEMP_MARK}.{outputs._HOST}-{proc.pid}-0.dcm"
    left = tmp_path / "out" / "dicom" / name
    left.write_bytes(b"DICM")
    generate_cohort(tmp_path / "out", subjects=2, seed=1, workers=1, progress=False)
    assert not left.exists()
    assert all(not p.name.startswith(".") for p in (tmp_path / "out").rglob("*"))
