"""Grad-CAM heat maps from a checkpoint: files of the right size, for both views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from matplotlib.image import imread

from bone_age.inference import explain
from bone_age.models import BoneAgeNet


@pytest.fixture(autouse=True)
def key_file(tmp_path_factory, monkeypatch) -> Path:
    """The pseudonym key explain uses for a DICOM file: never the user's own."""
    key = tmp_path_factory.getbasetemp() / "explain-secret" / "pseudonym.key"
    monkeypatch.setattr(explain, "DEFAULT_KEY_FILE", key)
    return key


def _checkpoint(tmp_path: Path, use_sex: bool = False) -> Path:
    """An untrained network saved with the inference metadata RunConfig writes."""
    model = dict(backbone="test_resnet", views=2, num_outputs=41, use_sex=use_sex,
                 pretrained=False, weights=None)
    net = BoneAgeNet(**model)
    meta = {"version": 1, "run": {}, "model": model,
            "loss": {"name": "mv", "min_age": 40, "max_age": 80, "lambda_mean": 0.2,
                     "lambda_var": 0.05},
            "data": {"views": ["anterior", "posterior"], "image_size": [64, 16],
                     "resize": "pad", "mirror_posterior": True, "normalize": "percentile",
                     "percentile": 99.0}}
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "bone_age": meta}, path)
    return path


def test_heat_maps_for_both_views(cohort, tmp_path):
    out = tmp_path / "explain"
    code = explain.main([str(_checkpoint(tmp_path, use_sex=True)), str(cohort),
                         "--out", str(out), "--scale", "3"])
    assert code == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(names) == 3 and any(n.endswith("_gradcam.png") for n in names)
    for view in ("anterior", "posterior"):
        image = imread(next(out.glob(f"*_{view}.png")))
        assert image.shape[:2] == (64 * 3, 16 * 3)  # model input size x scale
    assert imread(next(out.glob("*_gradcam.png"))).shape[0] > 300


def test_an_interrupted_explain_leaves_none_of_its_images(cohort, tmp_path, monkeypatch,
                                                          capsys):
    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(explain, "_figure", full_disk)  # the last of the three images
    out = tmp_path / "explain"
    assert explain.main([str(_checkpoint(tmp_path, use_sex=True)), str(cohort),
                         "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []  # not 2 of 3 PNGs, no temporaries


def test_gradcam_maps_are_normalised_and_per_view(tmp_path):
    net, spec = explain.load_checkpoint(_checkpoint(tmp_path))
    images = torch.randn(1, 2, 3, 64, 16)
    maps = explain.gradcam(net, spec, images, None)
    assert maps.shape == (2, 64, 16)
    assert np.abs(maps).max() == 1.0 or np.abs(maps).max() == 0.0  # one common scale
    finer = explain.gradcam(net, spec, images, None, stage=2)
    assert finer.shape == (2, 64, 16)


def test_a_second_dicom_file_gets_its_own_images(cohort, tmp_path, key_file):
    """Two single-file inputs into one folder: six images, none overwritten, no file name or
    header field in them; the same file again gives the same names."""
    from tests.conftest import cohort_rows

    files = sorted({row["anterior"] for row in cohort_rows(cohort)})[:2]
    ckpt, out = _checkpoint(tmp_path, use_sex=False), tmp_path / "explain"
    for f in files:
        assert explain.main([str(ckpt), str(cohort.parent / f), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(names) == 6 and len({n.split("_")[0] for n in names}) == 2, names
    assert not any(Path(f).stem in n for f in files for n in names)
    # Issue 33, item 9: named by the subject's pseudonym, as index and predict name it.
    from bone_age.data.pseudonym import Pseudonymizer, load_or_create_key

    pseudo = Pseudonymizer(load_or_create_key(key_file))
    ids = {pseudo.subject(str(pydicom.dcmread(cohort.parent / f).PatientID)) for f in files}
    assert {n.split("_")[0] for n in names} == ids
    assert explain.main([str(ckpt), str(cohort.parent / files[0]), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == names


def test_single_file_gets_the_index_checks(tmp_path, capsys):
    """Issue 27, item 7: an MR file, a 1 x 1 image or a lateral view is refused in one line,
    even with --view, before any heat map is drawn."""
    from tests.inference.test_predict import SINGLE_REFUSALS, _single

    ckpt = _checkpoint(tmp_path)
    for case in ("mr", "one_pixel", "lateral"):
        change, keep_view, _, words = SINGLE_REFUSALS[case]
        path = _single(tmp_path / "in", f"{case}.dcm", change, keep_view)
        out = tmp_path / case
        assert explain.main([str(ckpt), str(path), "--view", "anterior", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
        assert not list(out.glob("*.png")) if out.exists() else True


def test_no_image_goes_into_the_folder_of_the_scan_explained(cohort, tmp_path, capsys):
    """Issue 37, item 7: one DICOM file's folder is an input folder too, as is the folder of a
    manifest study's files (and of the file a link leads to): refused in one line, nothing
    written there."""
    import os

    from tests.conftest import cohort_rows, write_rows

    ckpt = _checkpoint(tmp_path)
    scans = tmp_path / "scans"
    scans.mkdir()
    scan = scans / "scan.dcm"
    scan.write_bytes((cohort.parent / cohort_rows(cohort)[0]["anterior"]).read_bytes())
    links = tmp_path / "links"
    links.mkdir()
    os.symlink(scan, links / "BA-1.dcm")
    manifest = write_rows(tmp_path / "m.csv", [dict(cohort_rows(cohort)[0],
                                                    anterior=str(links / "BA-1.dcm"),
                                                    posterior=str(links / "BA-1.dcm"))])
    for source, out in [(scan, scans), (scan, scans / "sub"), (links / "BA-1.dcm", scans),
                        (manifest, links), (manifest, scans / "x")]:
        before = sorted(scans.rglob("*")) + sorted(links.rglob("*"))
        assert explain.main([str(ckpt), str(source), "--out", str(out)]) == 2, (source, out)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "inside the folder of an input DICOM file" in err[0], err
        assert sorted(scans.rglob("*")) + sorted(links.rglob("*")) == before
    assert explain.main([str(ckpt), str(scan), "--out", str(tmp_path / "elsewhere")]) == 0
