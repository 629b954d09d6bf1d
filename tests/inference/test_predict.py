"""predict: from a checkpoint (weights_only) on a manifest, a DICOM folder and single files."""

from __future__ import annotations

import pytest
import torch

from bone_age.inference.checkpoint import CheckpointError, load_checkpoint
from bone_age.inference.predict import COLUMNS, main
from tests.conftest import SHARED_DICOM, read_rows


@pytest.fixture
def key_file(tmp_path_factory):
    return tmp_path_factory.mktemp("secret") / "pseudonym.key"


def test_checkpoint_carries_inference_settings(runs):
    ckpt = torch.load(runs["multi_vgg16"], weights_only=True)
    meta = ckpt["bone_age"]
    assert meta["data"] == {"views": ["anterior", "posterior"], "image_size": [32, 16],
                            "resize": "stretch", "mirror_posterior": True,
                            "normalize": "percentile", "percentile": 99.0}
    assert meta["model"]["backbone"] == "test_resnet" and meta["loss"]["name"] == "mv"
    summary = meta["training_data"]
    assert summary["n_female"] + summary["n_male"] == summary["n_train"] + summary["n_val"]


def test_pickled_code_is_refused(tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "bone_age": {}, "x": CheckpointError("code")}, bad)
    with pytest.raises(CheckpointError, match="not a checkpoint, or a damaged one"):
        load_checkpoint(bad)


def test_predict_on_manifest(runs, cohort, tmp_path):
    out = tmp_path / "preds.csv"
    assert main([str(runs["multi_vgg16"]), str(cohort), "--out", str(out)]) == 0
    rows = read_rows(out)
    assert list(rows[0]) == COLUMNS and len(rows) == 40
    for r in rows:
        assert float(r["pred_sd"]) > 0
        assert float(r["age_gap"]) == pytest.approx(float(r["pred_age"]) - float(r["age"]),
                                                    abs=2e-3)
    mse = tmp_path / "mse.csv"
    assert main([str(runs["vgg16"]), str(cohort), "--out", str(mse)]) == 0
    assert all(r["pred_sd"] == "" for r in read_rows(mse))


def test_predict_on_dicom_folder_matches_manifest(runs, cohort, tmp_path, key_file):
    by_manifest, by_folder = tmp_path / "m.csv", tmp_path / "f.csv"
    ckpt = str(runs["multi_vgg16"])
    assert main([ckpt, str(cohort), "--out", str(by_manifest)]) == 0
    assert main([ckpt, str(cohort.parent / "dicom"), "--out", str(by_folder),
                 "--key-file", str(key_file)]) == 0
    folder = read_rows(by_folder)
    assert len(folder) == 40 and all(r["subject_id"].startswith("BA-") for r in folder)
    # Same studies, same preprocessing: the same set of (age, sex, prediction).
    key = lambda r: (r["age"], r["sex"], r["pred_age"])  # noqa: E731
    assert sorted(map(key, folder)) == sorted(map(key, read_rows(by_manifest)))


def test_single_view_file_needs_view_and_single_view_model(runs, tmp_path, key_file, capsys):
    real = SHARED_DICOM / "NM1_UNC"
    if not real.is_file():
        pytest.skip("shared real DICOM samples not present")
    out = tmp_path / "real.csv"
    args = [str(real), "--out", str(out), "--key-file", str(key_file)]
    assert main([str(runs["vgg16"]), *args]) == 2
    assert "--view anterior or --view posterior" in capsys.readouterr().err
    assert main([str(runs["multi_vgg16"]), *args, "--view", "anterior"]) == 2
    assert "needs the anterior + posterior view(s) but the study has anterior" in \
        capsys.readouterr().err
    assert main([str(runs["vgg16"]), *args, "--view", "anterior"]) == 0
    (row,) = read_rows(out)
    assert row["age"] == "" and row["age_gap"] == "" and 30 < float(row["pred_age"]) < 90


def test_decoding_ahead_in_a_thread_gives_the_same_rows_and_refusals(runs, cohort, tmp_path,
                                                                     monkeypatch):
    import bone_age.inference.predict as P
    from bone_age.inference.predictor import TorchPredictor

    items, _ = P.from_manifest(cohort)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not dicom")
    items[3].files = {"anterior": broken, "posterior": broken}
    predictor = TorchPredictor(runs["multi_vgg16"])
    in_turn = P.predict(predictor, items, batch_size=4, progress=False)
    monkeypatch.setattr(P, "_spare_core", lambda: True)
    ahead = P.predict(predictor, items, batch_size=4, progress=False)
    assert ahead == in_turn and len(in_turn[0]) == 39
    assert [r.subject_id for r in ahead[1]] == [items[3].subject_id]


def test_refusals_of_a_folder_never_print_a_path_that_names_the_patient(runs, cohort, tmp_path,
                                                                         key_file, capsys):
    # The phantom names its files after the Patient ID, as many PACS exports do.
    import shutil

    export = tmp_path / "export"
    export.mkdir()
    for i in range(3):
        shutil.copy(cohort.parent / "dicom" / f"PH00000{i}.dcm", export)
    broken = export / "PH000001.dcm"
    data = broken.read_bytes()
    broken.write_bytes(data[: int(len(data) * 0.7)])  # header fine, pixels cut short
    out = tmp_path / "p.csv"
    assert main([str(runs["multi_vgg16"]), str(export), "--out", str(out),
                 "--key-file", str(key_file)]) == 1
    captured = capsys.readouterr()
    assert "PH000001" not in captured.out + captured.err
    assert len(read_rows(out)) == 2
    # Issue 33, item 7: no line per refusal; one summary line names the listing, where each
    # refusal names the study's pseudonyms.
    assert captured.err == ""
    summary = captured.out.strip().splitlines()
    assert len(summary) == 1 and "1 refused" in summary[0] and "p.csv.refused.csv" in summary[0]
    listing = read_rows(tmp_path / "p.csv.refused.csv")
    assert len(listing) == 1 and listing[0]["subject_id"].startswith("BA-")
    assert listing[0]["study"].startswith("ST-") and "truncated" in listing[0]["reason"]
    assert "PH000001" not in (tmp_path / "p.csv.refused.csv").read_text()


def test_a_folder_of_two_frame_files_without_view_codes_is_predicted(runs, cohort, tmp_path,
                                                                     key_file, capsys):
    """Issue 33, item 1: predict indexes a folder as the index does: a two-frame file whose
    headers name no view gets its views from the anatomy, and its frames are read from the
    files the indexer cuts out (kept while predicting)."""
    import pydicom

    from tests.data.test_index_views import strip_view

    export = tmp_path / "export"
    export.mkdir()
    for i in range(2):
        strip_view(pydicom.dcmread(cohort.parent / "dicom" / f"PH00000{i}.dcm")).save_as(
            export / f"IM{i}")
    out = tmp_path / "p.csv"
    assert main([str(runs["multi_vgg16"]), str(export), "--out", str(out),
                 "--key-file", str(key_file)]) == 0, capsys.readouterr()
    labelled = tmp_path / "p2.csv"
    assert main([str(runs["multi_vgg16"]), str(cohort.parent / "dicom"), "--out",
                 str(labelled), "--key-file", str(key_file)]) in (0, 1)
    got = {r["subject_id"]: r["pred_age"] for r in read_rows(out)}
    want = {r["subject_id"]: r["pred_age"] for r in read_rows(labelled)}
    # The same ages as from the labelled files (to rounding: batches of other sizes).
    assert len(got) == 2 and all(abs(float(got[k]) - float(want[k])) < 0.01 for k in got)


# Issue 27, item 7: a single file gets the index's checks; issue 26, item 7: no patient path --


def _single(tmp_path, name: str, change=None, view: bool = True):
    """A single-frame NM anterior file (64 x 16, a body in the middle), edited by ``change``."""
    import numpy as np

    from tests.nm_files import nm_dataset, write

    ds = nm_dataset("PID-0001", views=("anterior",))
    if not view:
        for item in [ds, *ds.DetectorInformationSequence]:
            if "ViewCodeSequence" in item:
                del item.ViewCodeSequence
        del ds.SeriesDescription
    if change:
        change(ds, np)
    return write(ds, tmp_path / name)


def _pixels(array):
    def change(ds, np):
        arr = np.asarray(array, dtype="<u2")
        ds.Rows, ds.Columns = arr.shape
        ds.PixelData = arr.tobytes()
    return change


def _lateral(ds, np):
    ds.ViewCodeSequence[0].CodeValue = "399198007"
    ds.ViewCodeSequence[0].CodeMeaning = "right lateral projection"
    ds.DetectorInformationSequence[0].ViewCodeSequence = ds.ViewCodeSequence


def _set(**values):
    def change(ds, np):
        for k, v in values.items():
            setattr(ds, k, v)
    return change


SINGLE_REFUSALS = {  # name: (edit, view code kept, --view given, expected words)
    "mr": (_set(Modality="MR"), True, True, "modality MR; expected NM"),
    "ct_no_view": (_set(Modality="CT"), False, False, "modality CT; expected NM"),
    "one_pixel": (_pixels([[7]]), False, True, "not one whole-body view's shape"),
    "square": (_pixels([[7] * 64] * 64), False, True, "not one whole-body view's shape"),
    "noise": (_pixels(__import__("numpy").random.default_rng(0).poisson(20, (64, 16))), False,
              True, "noise"),
    "hot_pixel": (_pixels([[0] * 16] * 31 + [[0] * 7 + [900] + [0] * 8] + [[0] * 16] * 32),
                  False, True, "no body"),
    "lateral": (_lateral, True, True, "projection other than anterior or posterior"),
}


@pytest.mark.parametrize("case", sorted(SINGLE_REFUSALS))
def test_single_file_gets_the_index_checks(runs, tmp_path, key_file, capsys, case):
    change, keep_view, view, words = SINGLE_REFUSALS[case]
    path = _single(tmp_path / "in", f"{case}.dcm", change, keep_view)
    args = [str(runs["vgg16"]), str(path), "--out", str(tmp_path / "p.csv"),
            "--key-file", str(key_file), *(["--view", "anterior"] if view else [])]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "p.csv").exists()


def test_a_plain_single_file_is_still_predicted(runs, tmp_path, key_file):
    path = _single(tmp_path / "in", "ok.dcm", view=False)
    out = tmp_path / "p.csv"
    assert main([str(runs["vgg16"]), str(path), "--out", str(out), "--key-file",
                 str(key_file), "--view", "anterior"]) == 0
    assert len(read_rows(out)) == 1


def test_a_single_file_named_after_the_patient_is_shown_by_pseudonym(runs, tmp_path, key_file,
                                                                       capsys):
    from tests.nm_files import nm_dataset, write

    ds = nm_dataset("QZ-4471", "Vandermeer^Ottoline", views=("anterior",))
    del ds.ViewCodeSequence, ds.DetectorInformationSequence[0].ViewCodeSequence
    del ds.SeriesDescription
    path = write(ds, tmp_path / "VANDERMEER" / "QZ-4471.dcm")
    assert main([str(runs["vgg16"]), str(path), "--out", str(tmp_path / "p.csv"),
                 "--key-file", str(key_file)]) == 2
    err = capsys.readouterr().err
    assert "QZ" not in err and "VANDERMEER" not in err
    assert "<the input file of BA-" in err and "--view" in err


def test_refusals_on_the_real_export_name_its_files(runs, tmp_path, key_file, capsys):
    """Issue 28, item 1: the NEMA scan's files are called NM1_* and its patient
    "CompressedSamples^NM1": its refusal lines must name the files, not hide every one as a
    path that names the patient."""
    if not (SHARED_DICOM / "NM1_UNC").is_file():
        pytest.skip("shared real DICOM samples not present")
    from bone_age.inference.predict import PATIENT_PATH

    assert main([str(runs["vgg16"]), str(SHARED_DICOM), "--out", str(tmp_path / "p.csv"),
                 "--key-file", str(key_file)]) == 2
    err = capsys.readouterr().err  # one line; each study's reason is in the listing it names
    listing = (tmp_path / "p.csv.refused.csv").read_text()
    assert err.count("\n") == 1 and "p.csv.refused.csv" in err
    assert "NM1_UNC" in listing and PATIENT_PATH not in err + listing


def test_predictions_never_go_into_the_folder_of_a_scan(cohort, tmp_path, capsys):
    """Issue 37, item 7: ``predict CK DIR/scan.dcm --out DIR/p.csv`` is refused like a DICOM
    folder given whole; so is an output among a manifest's scans."""
    from tests.inference.test_explain import _checkpoint

    ckpt = _checkpoint(tmp_path)
    scan = _single(tmp_path / "in", "ok.dcm", view=False)
    dicom = cohort.parent / "dicom"
    for source, out in [(scan, scan.parent / "p.csv"), (scan, scan.parent / "a" / "p.csv"),
                        (cohort, dicom / "p.csv")]:
        assert main([str(ckpt), str(source), "--out", str(out), "--view", "anterior"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "inside the folder of an input DICOM file" in err[0], err
        assert not out.exists() and not out.with_name("p.csv.refused.csv").exists()
