"""Sites: the index's pseudonymous site column, leave-one-site-out folds (data.split=site) and
Table 1 per held-out site."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bone_age.data.folds import site_fold_parts, site_order
from bone_age.data.labels import study_site
from bone_age.data.pseudonym import Pseudonymizer, load_or_create_key
from bone_age.evaluation.table1 import report
from bone_age.index import main as index_main
from bone_age.inference.checkpoint import read_checkpoint
from bone_age.phantom import generate_cohort
from bone_age.utils.errors import BoneAgeError
from tests.conftest import cohort_rows, read_rows, run_in_process, tiny_overrides, write_rows
from tests.nm_files import nm_dataset, write

# Names of words found nowhere else, so that any trace of one in an output is caught.
PLANTED = {"InstitutionName": "Xyzzy Plantedhospital", "StationName": "PLANTSTATION7",
           "Manufacturer": "Plantcorp Quuxmedical", "ManufacturerModelName": "Plantscan Zorb900"}


def _nm(patient: str, seed: int, **site):
    ds = nm_dataset(patient_id=patient, name=f"Doe^{patient}", seed=seed)
    for keyword, value in site.items():
        setattr(ds, keyword, value)
    return ds


def test_index_writes_site_pseudonyms_and_never_the_names(tmp_path, capsys):
    export = tmp_path / "export"
    by_patient = {
        "P1": _nm("P1", 1, **PLANTED),  # institution wins
        "P2": _nm("P2", 2, InstitutionName="  xyzzy   PLANTEDHOSPITAL "),  # same site, respelled
        "P3": _nm("P3", 3, StationName=PLANTED["StationName"],
                  Manufacturer=PLANTED["Manufacturer"]),  # station before the device
        "P4": _nm("P4", 4, Manufacturer=PLANTED["Manufacturer"],
                  ManufacturerModelName=PLANTED["ManufacturerModelName"]),
        "P5": _nm("P5", 5),  # no site in the headers
    }
    for patient, ds in by_patient.items():
        write(ds, export / f"{patient}.dcm")
    key, out = tmp_path / "owner" / "key", tmp_path / "out"
    assert index_main([str(export), "--out", str(out / "manifest.csv"), "--key-file",
                       str(key)]) in (0, 1)
    printed = capsys.readouterr()
    pseudo = Pseudonymizer(load_or_create_key(key))
    site_of = {pseudo.subject(p): pseudo.site(study_site(ds)) for p, ds in by_patient.items()}
    rows = {r["subject_id"]: r["site"] for r in read_rows(out / "manifest.csv")}
    assert rows == site_of
    s = {p: site_of[pseudo.subject(p)] for p in by_patient}
    assert s["P1"] == s["P2"] and len({s["P1"], s["P3"], s["P4"]}) == 3 and s["P5"] == ""
    assert all(v.startswith("SITE-") and len(v) == 13 for k, v in s.items() if k != "P5")
    # Another key, other pseudonyms: the site cannot be recomputed from its name alone.
    other = Pseudonymizer(bytes(32))
    assert other.site(study_site(by_patient["P1"])) != s["P1"]
    # No output (files, their names, what was printed) holds a planted name, in any spelling.
    texts = [printed.out, printed.err]
    for path in out.rglob("*"):
        texts.append(str(path.relative_to(out)))
        if path.is_file() and not path.is_symlink() and path.suffix != ".dcm":
            texts.append(path.read_text(errors="replace"))
    blob = " ".join(texts).casefold()
    for name in PLANTED.values():
        for word in name.casefold().split():
            assert word not in blob, word


def test_site_folds_hold_each_site_out_once():
    rng = np.random.default_rng(0)
    n = 60
    subjects = [f"S{i:03d}" for i in range(n)]
    sites = [["SITE-b", "SITE-a", "SITE-c"][i % 3] for i in range(n)]
    sites[7] = ""  # no site: never placed
    ages = list(rng.uniform(40, 80, n))
    sexes = list(rng.choice(["F", "M"], n))
    assert site_order(sites) == ["SITE-a", "SITE-b", "SITE-c"]
    tested = []
    for fold, site in enumerate(site_order(sites)):
        parts = site_fold_parts(ages, sexes, subjects, sites, fold, 0.1, seed=3)
        assert parts == site_fold_parts(ages, sexes, subjects, sites, fold, 0.1, seed=3)
        test = {s for s, p in parts.items() if p == "test"}
        assert test == {s for s, x in zip(subjects, sites, strict=True) if x == site}
        fit = [x for s, x in zip(subjects, sites, strict=True) if parts[s] in ("train", "val")]
        assert site not in fit and "" not in fit
        assert {parts[s] for s, x in zip(subjects, sites, strict=True) if x != site and x} == \
            {"train", "val"}
        assert parts["S007"] == "no_site"
        tested += sorted(test)
    assert sorted(tested) == sorted(s for s, x in zip(subjects, sites, strict=True) if x)
    with pytest.raises(ValueError, match="at least 2 sites"):
        site_fold_parts(ages, sexes, subjects, ["SITE-a"] * n, 0)
    with pytest.raises(ValueError, match=r"data.fold must be in 0..2 .*3 sites"):
        site_fold_parts(ages, sexes, subjects, sites, 3)


def _with_sites(cohort: Path, out: Path, sites: list[str] | None) -> Path:
    """The cohort's manifest, view paths made absolute, with a site column (None: without)."""
    rows = cohort_rows(cohort)
    if sites is not None:
        for i, r in enumerate(rows):
            r["site"] = sites[i % len(sites)]
    return write_rows(out, rows)


def test_leave_one_site_out_run(cohort, tmp_path):
    manifest = _with_sites(cohort, tmp_path / "m" / "manifest.csv",
                           ["SITE-cc", "SITE-aa", "SITE-bb"])
    out = tmp_path / "run"
    metrics = run_in_process([*tiny_overrides(manifest, tmp_path), "model=vgg16", "loss=mse",
                              "data.split=site", "data.fold=1"], out)
    assert metrics["split"] == "site" and metrics["test_site"] == "SITE-bb"
    site_of = {r["subject_id"]: r["site"] for r in read_rows(manifest)}
    tested = [r["subject_id"] for r in read_rows(out / "predictions.csv")]
    assert {site_of[s] for s in tested} == {"SITE-bb"}
    assert len(tested) == sum(v == "SITE-bb" for v in site_of.values())
    assert metrics["n_train"] + metrics["n_val"] == len(site_of) - len(tested)
    record = read_checkpoint(next((out / "checkpoints").glob("epoch*.ckpt")))["bone_age"]
    assert record["training_data"]["num_folds"] == 3
    assert record["training_data"]["test_site"] == "SITE-bb"


@pytest.mark.parametrize(("sites", "message"), [
    (None, "data.split=site needs a site column; the manifest has none"),
    (["SITE-aa"], "data.split=site needs at least 2 sites; the cohort has 1"),
])
def test_site_split_without_sites_is_one_clear_error(cohort, tmp_path, sites, message):
    manifest = _with_sites(cohort, tmp_path / "m" / "manifest.csv", sites)
    # Refused by the settings check, before the run folder exists (a sweep: before its first job).
    with pytest.raises(BoneAgeError, match=message) as err:
        run_in_process([*tiny_overrides(manifest, tmp_path), "data.split=site"],
                       tmp_path / "run")
    assert "\n" not in str(err.value) and str(manifest) in str(err.value)


def test_report_gives_each_held_out_site_a_row_and_pools_them(tmp_path):
    rng = np.random.default_rng(1)
    per_site = {}
    for fold, site in enumerate(["SITE-aa", "SITE-bb", "SITE-cc"]):
        run = tmp_path / f"fold{fold}"
        run.mkdir()
        age = rng.uniform(40, 80, 10)
        pred = age + rng.normal(0, 2 + 2 * fold, 10)
        per_site[site] = np.abs(pred - age).mean()
        (run / "metrics.json").write_text(json.dumps({
            "model": "multi_vgg16", "backbone": "vgg16", "loss": "mv", "fold": fold,
            "split": "site", "test_site": site, "train_mean_age": 60.0}))
        lines = ["subject_id,fold,sex,age,pred_age,pred_sd"]
        lines += [f"S{fold}{i},{fold},F,{float(a)!r},{float(p)!r},2" for i, (a, p) in enumerate(
            zip(age, pred, strict=True))]
        (run / "predictions.csv").write_text("\n".join(lines) + "\n")
    evaluation = tmp_path / "external"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"kind": "evaluation", "mae": 1.0}))
    (evaluation / "predictions.csv").write_text("subject_id,sex,age,pred_age,pred_sd\nX,F,50,51,\n")
    table = report(tmp_path).read_text()
    for site, mae in per_site.items():
        assert f"| {site} | 10 | {mae:.2f} (" in table
    assert "| pooled (3 sites) | 30 |" in table
    rows = read_rows(tmp_path / "table1_sites.csv")
    assert [r["site"] for r in rows] == ["SITE-aa", "SITE-bb", "SITE-cc", "pooled (3 sites)"]
    # the evaluation run is left out of Table 1
    assert [int(r["folds"]) for r in read_rows(tmp_path / "table1.csv")] == [3]


@pytest.fixture(scope="module")
def multi_site_phantom(tmp_path_factory) -> Path:
    """A 3-site, 36-subject phantom cohort (one camera and population per site)."""
    out = tmp_path_factory.mktemp("phantom_sites")
    return Path(generate_cohort(out, 36, 5, workers=2, progress=False, sites=3))


def test_index_recovers_the_phantom_sites_without_their_names(multi_site_phantom, tmp_path,
                                                              capsys):
    cohort = multi_site_phantom.parent
    key, out = tmp_path / "owner" / "key", tmp_path / "out"
    assert index_main([str(cohort / "dicom"), "--out", str(out / "manifest.csv"),
                       "--key-file", str(key)]) == 0
    printed = capsys.readouterr()
    pseudo = Pseudonymizer(load_or_create_key(key))
    indexed = {r["subject_id"]: r["site"] for r in read_rows(out / "manifest.csv")}
    phantom = {pseudo.subject(r["subject_id"]): r["site"] for r in read_rows(multi_site_phantom)}
    assert set(indexed) == set(phantom)

    def groups(site_of: dict[str, str]) -> set[frozenset[str]]:
        return {frozenset(s for s, x in site_of.items() if x == site)
                for site in set(site_of.values())}

    assert len(set(indexed.values())) == 3 and "" not in indexed.values()
    assert groups(indexed) == groups(phantom)
    info = json.loads((cohort / "phantom_info.json").read_text())
    names = [s[k] for s in info["sites"] for k in ("institution", "station", "manufacturer",
                                                    "model")]
    export = {(p.stat().st_dev, p.stat().st_ino) for p in (cohort / "dicom").iterdir()}
    texts = [printed.out, printed.err]
    for path in out.rglob("*"):
        texts.append(str(path.relative_to(out)))
        # Links (symbolic or hard) lead to the export files themselves; the rest is written.
        if path.is_file() and (path.stat().st_dev, path.stat().st_ino) not in export:
            texts.append(path.read_text(errors="replace"))
    blob = " ".join(texts).casefold()
    for name in names:
        assert name.casefold() not in blob, name
    for word in {w for s in info["sites"] for w in s["manufacturer"].casefold().split()}:
        assert word not in blob, word


def test_leave_one_site_out_run_on_a_multi_site_phantom(multi_site_phantom, tmp_path):
    out = tmp_path / "run"
    metrics = run_in_process([*tiny_overrides(multi_site_phantom, tmp_path), "model=vgg16",
                              "loss=mse", "data.split=site", "data.fold=0"], out)
    site_of = {r["subject_id"]: r["site"] for r in read_rows(multi_site_phantom)}
    first = sorted(set(site_of.values()))[0]
    assert metrics["split"] == "site" and metrics["test_site"] == first
    tested = [r["subject_id"] for r in read_rows(out / "predictions.csv")]
    assert {site_of[s] for s in tested} == {first} and len(tested) == 12
    assert metrics["n_train"] + metrics["n_val"] == 24
