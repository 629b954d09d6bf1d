"""Bad input to the commands: one line ``bone-age <command>: ...`` naming file and key, exit 2.

Checkpoints, ONNX models, output locations and resumed runs, crafted from one tiny checkpoint.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bone_age.inference import explain, export, predict
from bone_age.models import BoneAgeNet
from bone_age.training.resume import ResumeError
from bone_age.utils import errors
from bone_age.utils.outputs import OutputError, write_atomic
from tests.conftest import run_in_process, tiny_overrides


@pytest.fixture(scope="module")
def tiny(cohort, tmp_path_factory) -> dict:
    """A finished tiny dual-view mv run: its best checkpoint, last.ckpt and the manifest."""
    tmp = tmp_path_factory.mktemp("commands")
    run = tmp / "run"
    overrides = [*tiny_overrides(cohort, tmp), "model=multi_vgg16", "loss=mv"]
    run_in_process(overrides, run)
    best = next((run / "checkpoints").glob("epoch*.ckpt"))
    return {"ckpt": best, "last": run / "checkpoints" / "last.ckpt", "manifest": cohort,
            "overrides": overrides, "content": torch.load(best, weights_only=True)}


def _changed(tiny: dict, path: Path, change) -> Path:
    content = copy.deepcopy(tiny["content"])
    change(content)
    torch.save(content, path)
    return path


def _err_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"bone-age {command}: ") and "Traceback" not in err
    return err


class _Payload:
    """A pickle that would create a file when loaded with pickle's full powers."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _drop(*keys):
    def change(c):
        node = c
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return change


def _set(value, *keys):
    def change(c):
        node = c
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return change


BAD_CHECKPOINTS = {
    # name: (how to make it from the good checkpoint's content, text the message must hold)
    "no_settings": (_drop("bone_age"), "no 'bone_age' settings"),
    "settings_lack_model": (_drop("bone_age", "model"), "setting bone_age.model is missing"),
    "settings_lack_views": (_drop("bone_age", "data", "views"),
                            "setting bone_age.data.views is missing"),
    "image_size_text": (_set("big", "bone_age", "data", "image_size"),
                        "bone_age.data.image_size is 'big'"),
    "image_size_huge": (_set([10**6, 16], "bone_age", "data", "image_size"),
                        "bone_age.data.image_size"),
    "unknown_views": (_set(["lateral"], "bone_age", "data", "views"), "bone_age.data.views"),
    "unknown_backbone": (_set("no_such_net", "bone_age", "model", "backbone"),
                         "bone_age.model cannot build the network"),
    "unknown_model_key": (_set(1, "bone_age", "model", "colour"), "unexpected keyword"),
    "unknown_loss": (_set("huber", "bone_age", "loss", "name"), "bone_age.loss"),
    "classes_not_outputs": (_set(90, "bone_age", "loss", "max_age"),
                            "bone_age.model.num_outputs is 41 but the loss settings need 51"),
    "no_weights": (_drop("state_dict"), "no 'state_dict'"),
    "weight_missing": (_drop("state_dict", "net.head.bias"), "missing net.head.bias"),
    "weight_unexpected": (_set(torch.zeros(2), "state_dict", "net.extra"),
                          "unexpected net.extra"),
    "weight_shape": (_set(torch.zeros(3, 3), "state_dict", "net.head.bias"),
                     "weight net.head.bias has shape [3, 3]"),
    "weight_nan": (_set(torch.full((41,), float("nan")), "state_dict", "net.head.bias"),
                   "net.head.bias holds NaN"),
    "not_a_mapping": (None, "holds a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoints_end_every_command_in_one_line(tiny, tmp_path, capsys, case):
    change, said = BAD_CHECKPOINTS[case]
    path = tmp_path / f"{case}.ckpt"
    if change is None:
        torch.save([1, 2], path)
    else:
        _changed(tiny, path, change)
    dicom = next((tiny["manifest"].parent / "dicom").glob("*.dcm"))
    runs = {"predict": lambda: predict.main([str(path), str(tiny["manifest"]),
                                             "--out", str(tmp_path / "p.csv")]),
            "export": lambda: export.main([str(path), "--out", str(tmp_path / "m.onnx")]),
            "explain": lambda: explain.main([str(path), str(dicom),
                                             "--out", str(tmp_path / "x")])}
    for command, run in runs.items():
        assert run() == 2
        line = _err_line(capsys, command)
        assert f"{path}: " in line and said in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing written


@pytest.mark.parametrize("content, said", [
    (b"", "empty file (0 bytes)"),
    (os.urandom(4096), "not a checkpoint, or a damaged one"),
    ("half", "not a checkpoint, or a damaged one"),
    ("flipped", "damaged file: checksum mismatch in"),
])
def test_empty_garbage_cut_or_changed_files_are_refused(tiny, tmp_path, capsys, content, said):
    data = tiny["ckpt"].read_bytes()
    if content == "half":
        content = data[: len(data) // 2]
    elif content == "flipped":  # one byte inside the stored weights
        content = bytearray(data)
        content[len(data) // 2] ^= 0x55
    path = tmp_path / "bad.ckpt"
    path.write_bytes(bytes(content))
    assert predict.main([str(path), str(tiny["manifest"]), "--out", str(tmp_path / "p.csv")]) == 2
    assert said in _err_line(capsys, "predict")


def test_a_malicious_checkpoint_runs_no_code(tiny, tmp_path, capsys):
    marker = tmp_path / "code_ran"
    path = _changed(tiny, tmp_path / "evil.ckpt", _set(_Payload(marker), "bone_age", "extra"))
    assert export.main([str(path), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "nothing in the file is run" in _err_line(capsys, "export")
    assert not marker.exists()


@pytest.mark.parametrize("path_kind, said", [("missing", "checkpoint file does not exist"),
                                             ("folder", "a folder, not a checkpoint file")])
def test_missing_path_or_folder_as_checkpoint(tiny, tmp_path, capsys, path_kind, said):
    path = tmp_path / "nothing.ckpt" if path_kind == "missing" else tmp_path
    assert export.main([str(path), "--out", str(tmp_path / "m.onnx")]) == 2
    assert said in _err_line(capsys, "export")


def _onnx_model(path: Path, meta: str | None, inputs=(("counts", ["N", 2, 32, 16]),),
                outputs=("age", "sd")) -> Path:
    """A small graph (mean of the counts per study) with the given interface and metadata."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Flatten", [inputs[0][0]], ["flat"], axis=1),
             helper.make_node("ReduceMean", ["flat", "axes"], [outputs[0]], keepdims=0)]
    nodes += [helper.make_node("Identity", [outputs[0]], [name]) for name in outputs[1:]]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N"]) for n in outputs],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    if meta is not None:
        model.metadata_props.append(onnx.StringStringEntryProto(key="bone_age", value=meta))
    onnx.save(model, str(path))
    return path


def test_onnx_models_with_wrong_interface_or_metadata(tiny, tmp_path, capsys):
    meta = json.dumps(tiny["content"]["bone_age"])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(2048))
    cases = {
        garbage: "not a loadable ONNX model",
        _onnx_model(tmp_path / "no_meta.onnx", None): "no 'bone_age' metadata",
        _onnx_model(tmp_path / "not_json.onnx", "{x"): "metadata 'bone_age' is not JSON",
        _onnx_model(tmp_path / "lacking.onnx", json.dumps({"data": {}})):
            "setting bone_age.data.views is missing",
        _onnx_model(tmp_path / "input_name.onnx", meta, inputs=(("x", ["N", 2, 32, 16]),)):
            "the model's inputs are ['x']; its settings need ['counts']",
        _onnx_model(tmp_path / "input_size.onnx", meta, inputs=(("counts", ["N", 2, 64, 16]),)):
            "input counts has shape ['N', 2, 64, 16]",
        _onnx_model(tmp_path / "no_sd.onnx", meta, outputs=("age",)):
            "need 'age' and 'sd'",
    }
    for path, said in cases.items():
        assert predict.main([str(path), str(tiny["manifest"]),
                             "--out", str(tmp_path / "p.csv")]) == 2
        line = _err_line(capsys, "predict")
        assert f"{path}: " in line and said in line, line
    # The same interface with the right names and sizes is taken (so the checks are not blanket).
    ok = _onnx_model(tmp_path / "ok.onnx", meta)
    assert predict.main([str(ok), str(tiny["manifest"]), "--out", str(tmp_path / "p.csv")]) == 0


def test_outputs_are_checked_before_any_work(tiny, tmp_path, capsys, monkeypatch):
    import bone_age.inference.predictor

    def no_work(*_a, **_k):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(bone_age.inference.predictor, "TorchPredictor", no_work)
    monkeypatch.setattr(export, "load_checkpoint", no_work)
    monkeypatch.setattr(explain, "load_checkpoint", no_work)
    a_file = tmp_path / "some_file.txt"
    a_file.write_text("keep me")
    ckpt, manifest = str(tiny["ckpt"]), str(tiny["manifest"])
    assert predict.main([ckpt, manifest, "--out", str(a_file / "preds.csv")]) == 2
    assert "some_file.txt is a file, not a folder" in _err_line(capsys, "predict")
    assert predict.main([ckpt, manifest, "--out", str(tmp_path)]) == 2
    assert "it is a folder" in _err_line(capsys, "predict")
    assert predict.main([ckpt, manifest, "--out", manifest]) == 2
    assert "would overwrite the input" in _err_line(capsys, "predict")
    assert export.main([ckpt, "--out", str(a_file / "deeper" / "model.onnx")]) == 2
    assert "some_file.txt is a file, not a folder" in _err_line(capsys, "export")
    assert explain.main([ckpt, manifest, "--out", str(a_file)]) == 2
    assert "it is a file, not a folder" in _err_line(capsys, "explain")
    assert a_file.read_text() == "keep me"


def test_no_command_replaces_a_fifo_or_device_or_writes_into_the_export(tiny, tmp_path, capsys):
    from bone_age.evaluation import evaluate

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    ckpt, manifest = str(tiny["ckpt"]), str(tiny["manifest"])
    for special in (fifo, Path("/dev/null")):  # the FIFO first: a regression stops there
        assert predict.main([ckpt, manifest, "--out", str(special)]) == 2
        assert "not a regular file" in _err_line(capsys, "predict")
        assert export.main([ckpt, "--out", str(special)]) == 2
        assert "not a regular file" in _err_line(capsys, "export")
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    os.mkfifo(evaluation / "metrics.json")
    assert evaluate.main([ckpt, manifest, "--out", str(evaluation)]) == 2
    said = "metrics.json: cannot write the evaluation: it is not a regular file (a FIFO)"
    assert said in _err_line(capsys, "evaluate")
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert stat.S_ISFIFO((evaluation / "metrics.json").lstat().st_mode)
    # A DICOM folder as input: no output inside it (it would be read as part of the export).
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    shutil.copy(next((tiny["manifest"].parent / "dicom").glob("*.dcm")), export_dir / "a.dcm")
    key = str(tmp_path / "secret" / "key")
    assert predict.main([ckpt, str(export_dir), "--out", str(export_dir / "a.dcm"),
                         "--key-file", key]) == 2
    assert "inside the input folder" in _err_line(capsys, "predict")
    assert evaluate.main([ckpt, str(export_dir), "--out", str(export_dir / "eval"),
                          "--key-file", key]) == 2
    assert "inside the input folder" in _err_line(capsys, "evaluate")
    assert os.listdir(export_dir) == ["a.dcm"]


def _command(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """A command in a subprocess with a timeout: a regression that blocks fails, not hangs."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_special_files_and_absurd_counts_are_refused_in_one_line(tiny, tmp_path):
    fifo = tmp_path / "in" / "scan.dcm"  # outputs go outside the scan's folder
    fifo.parent.mkdir()
    os.mkfifo(fifo)  # a reader blocks on it forever
    for special in (fifo, Path("/dev/null")):
        done = _command("bone_age.evaluate", str(tiny["ckpt"]), str(special),
                        "--out", str(tmp_path / "eval"))
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"bone-age evaluate: {special}: file is not a regular file (a " in done.stderr
        done = _command("bone_age.phantom.realism", str(special), "--out", str(tmp_path / "r"))
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "not a regular file" in done.stderr
    for command, limit in (("bone_age.phantom.realism", "10,000"), ("bone_age.phantom", "100,000")):
        ref = [str(tiny["manifest"])] if command.endswith("realism") else []
        done = _command(command, *ref, "--subjects", "1000000000", "--out", str(tmp_path / "p"),
                        timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"--subjects: must be at most {limit}, got 1,000,000,000" in done.stderr
    assert not (tmp_path / "eval").exists() and not (tmp_path / "p").exists()


def test_files_are_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "preds.csv"
    target.write_text("old content\n")

    def fails_half_way(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(target, fails_half_way)
    assert target.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["preds.csv"]  # no temporary left behind
    write_atomic(target, lambda tmp: tmp.write_text("new\n"))
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "new\n" and target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(OutputError, match="is a file, not a folder"):
        predict.check_output_file(target / "x.csv", "predictions")


def test_single_dicom_file_keeps_the_key_out_of_its_folder_and_outputs(tiny, tmp_path, capsys):
    export_dir, out_dir = tmp_path / "export", tmp_path / "out"
    export_dir.mkdir()
    scan = export_dir / "scan.dcm"
    shutil.copy(next((tiny["manifest"].parent / "dicom").glob("*.dcm")), scan)
    out = out_dir / "preds.csv"
    for key in (export_dir / "pseudonym.key", out_dir / "pseudonym.key"):
        assert predict.main([str(tiny["ckpt"]), str(scan), "--out", str(out),
                             "--key-file", str(key)]) == 2
        assert "must not be inside" in _err_line(capsys, "predict")
        assert not key.exists() and not out.exists()
    key = tmp_path / "secret" / "pseudonym.key"
    assert predict.main([str(tiny["ckpt"]), str(scan), "--out", str(out),
                         "--key-file", str(key)]) == 0
    assert key.is_file() and out.is_file()


def _sex_model(tiny: dict, path: Path) -> Path:
    """A checkpoint of the tiny run's settings with sex as an input (untrained weights)."""
    meta = copy.deepcopy(tiny["content"]["bone_age"])
    meta["model"]["use_sex"] = True
    net = BoneAgeNet(**meta["model"])
    torch.save({"bone_age": meta, "state_dict": {f"net.{k}": v
                                                  for k, v in net.state_dict().items()}}, path)
    return path


def test_empty_sex_is_refused_only_by_models_that_use_sex(tiny, tmp_path, capsys):
    with tiny["manifest"].open() as f:
        rows = list(csv.DictReader(f))[:4]
    base = tiny["manifest"].parent
    for r in rows[:2]:
        r["sex"] = ""
    for r in rows:
        r["anterior"], r["posterior"] = str(base / r["anterior"]), str(base / r["posterior"])
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "p.csv"
    assert predict.main([str(tiny["ckpt"]), str(manifest), "--out", str(out)]) == 0
    with out.open() as f:
        assert [r["sex"] for r in csv.DictReader(f)] == ["", "", rows[2]["sex"], rows[3]["sex"]]
    capsys.readouterr()
    sex_model = _sex_model(tiny, tmp_path / "sex.ckpt")
    assert predict.main([str(sex_model), str(manifest), "--out", str(out)]) == 1
    captured = capsys.readouterr()  # one summary line; each refusal is in the listing
    assert captured.err == "" and "2 refused" in captured.out
    with out.with_name("p.csv.refused.csv").open() as f:
        refused = list(csv.DictReader(f))
    assert len(refused) == 2 and all("uses sex as an input" in r["reason"] for r in refused)
    assert [r["subject_id"] for r in refused] == [rows[0]["subject_id"], rows[1]["subject_id"]]


def _resume_cfg(tiny: dict, tmp_path: Path, change) -> tuple[Path, Path]:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints" / "last.ckpt"
    shutil.copy(tiny["ckpt"], run / "checkpoints")  # the best checkpoint last.ckpt names
    content = torch.load(tiny["last"], weights_only=True)
    change(content, last)
    return run, last


def _save_changed(change):
    def write(content, path):
        change(content)
        torch.save(content, path)
    return write


RESUME_CASES = {
    "empty": (lambda c, p: p.write_bytes(b""), "empty file (0 bytes)"),
    "garbage": (lambda c, p: p.write_bytes(os.urandom(3000)), "not a checkpoint"),
    "weights_only": (_save_changed(_drop("optimizer_states")), "'optimizer_states' is missing"),
    "epoch_text": (_save_changed(_set("three", "epoch")), "'epoch' is a str"),
    "other_model": (_save_changed(_drop("state_dict", "net.head.bias")),
                    "missing net.head.bias"),
    "optimizer_groups": (_save_changed(lambda c: c["optimizer_states"][0]["param_groups"][0]
                                       .update(params=[0, 1])), "optimizer state does not fit"),
    # Not checked beforehand: Lightning fails while restoring its loops.
    "loops": (_save_changed(_set("x", "loops", "fit_loop")), "cannot resume from it"),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_from_a_damaged_last_checkpoint_is_refused(tiny, tmp_path, case):
    change, said = RESUME_CASES[case]
    run, last = _resume_cfg(tiny, tmp_path, change)
    before = last.read_bytes()
    overrides = [*tiny["overrides"], "resume=true"]  # other settings are refused too
    with pytest.raises(ResumeError) as err:
        run_in_process(overrides, run)
    message = errors.user_error_message(err.value)
    assert str(last) in message and said in message and "set resume=false" in message
    assert "\n" not in message
    assert last.read_bytes() == before  # not overwritten: the user decides


def _files(folder: Path) -> dict[Path, tuple[int, int, bytes]]:
    """Every file's inode, time and bytes; not the folder's lock, which every run takes."""
    from bone_age.utils.outputs import LOCK_FILE

    return {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def test_a_copied_run_folder_resumes_with_its_own_checkpoints_only(tiny, tmp_path):
    original = tiny["last"].parent.parent
    before = _files(original)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    (copy / "metrics.json").unlink()  # an unfinished run: resume continues it
    tested = copy / "checkpoints" / tiny["ckpt"].name
    copied = tested.stat().st_ino
    metrics = run_in_process([*tiny["overrides"], "resume=true"], copy)
    assert metrics["n_test"] > 0
    # last.ckpt names the original's best checkpoint: the copy's own file of that name was
    # tested and received the calibration record; the original folder is untouched.
    assert tested.stat().st_ino != copied
    assert _files(original) == before


@pytest.mark.parametrize("finished", [True, False])
def test_resume_refuses_a_run_started_with_other_settings(tiny, tmp_path, finished):
    copy = tmp_path / "copy"
    shutil.copytree(tiny["last"].parent.parent, copy)
    if not finished:  # interrupted: last.ckpt records the settings
        (copy / "metrics.json").unlink()
    before = _files(copy)
    with pytest.raises(ResumeError) as err:
        run_in_process([*tiny["overrides"], "resume=true", "trainer.max_epochs=3",
                        "module.optimizer.lr=0.5"], copy)
    message = errors.user_error_message(err.value)
    where = copy / ("metrics.json" if finished else "checkpoints/last.ckpt")
    assert message.startswith(f"{where}: this run was started with other settings")
    assert "module.optimizer.lr: 0.0001 there, 0.5 now" in message
    assert "trainer.max_epochs: 1 there, 3 now" in message and "\n" not in message
    assert _files(copy) == before
    if finished:  # the same settings: skipped, as before
        again = run_in_process([*tiny["overrides"], "resume=true"], copy)
        assert again["mae"] == json.loads((copy / "metrics.json").read_text())["mae"]


def _with_checkpoint_state(**paths):
    def change(content):
        key = next(k for k in content["callbacks"] if k.startswith("ModelCheckpoint"))
        content["callbacks"][key].update(paths)
    return change


@pytest.mark.parametrize("case", ["system_file", "other_run", "not_text", "best_k", "symlink"])
def test_resume_refuses_checkpoint_paths_outside_the_run(tiny, tmp_path, case):
    other = tmp_path / "other" / "checkpoints" / "epoch007.ckpt"
    other.parent.mkdir(parents=True)
    shutil.copy(tiny["ckpt"], other)
    changes = {"system_file": _with_checkpoint_state(best_model_path="/etc/passwd"),
               "other_run": _with_checkpoint_state(best_model_path=str(other)),
               "not_text": _with_checkpoint_state(best_model_path=7),
               "best_k": _with_checkpoint_state(best_k_models={str(other): torch.tensor(1.0)}),
               "symlink": lambda c: None}
    run, last = _resume_cfg(tiny, tmp_path, _save_changed(changes[case]))
    if case == "symlink":  # last.ckpt leading to another run's file
        last.unlink()
        last.symlink_to(tiny["last"])
    before = _files(tmp_path / "other") | _files(tiny["last"].parent)
    with pytest.raises(ResumeError) as err:
        run_in_process([*tiny["overrides"], "resume=true"], run)
    message = errors.user_error_message(err.value)
    assert str(last) in message and "set resume=false" in message and "\n" not in message
    assert {"system_file": "/etc/passwd", "other_run": str(other), "not_text": "is a int",
            "best_k": "best_k_models names", "symlink": "outside this run's folder"}[case] \
        in message
    assert _files(tmp_path / "other") | _files(tiny["last"].parent) == before
    assert not (run / "metrics.json").exists()


def test_float64_training_runs(tiny, tmp_path):
    metrics = run_in_process([*tiny["overrides"], "trainer.precision=64-true",
                              "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1"],
                             tmp_path / "run")
    assert 0 < metrics["mae"] < 50


def _run_cli(tiny: dict, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bone_age.run", *tiny["overrides"], *extra,
           f"hydra.run.dir={tmp_path / 'run'}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_run_reports_a_latin1_manifest_in_one_line(tiny, tmp_path):
    latin1 = tmp_path / "latin1.csv"
    text = tiny["manifest"].read_text().replace("PH000003", "Zoë", 1)
    latin1.write_bytes(text.encode("latin-1"))
    done = _run_cli(tiny, tmp_path, f"data.manifest={latin1}")
    said = done.stdout + done.stderr  # the run's log, on the terminal and in its log file
    assert done.returncode == 2 and "Traceback" not in said
    lines = [x for x in said.splitlines() if "bone-age run:" in x]
    assert len(lines) == 1 and "is not UTF-8" in lines[0] and str(latin1) in lines[0]


def test_every_command_ends_user_errors_in_one_line(tmp_path, capsys):
    from bone_age import index
    from bone_age.bench.__main__ import main as bench
    from bone_age.evaluation import table1 as report
    from bone_age.phantom.__main__ import main as phantom

    capsys.readouterr()  # warnings of the imports
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "dicom").mkdir()
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results.json").write_text("{not json")
    key = f"--key-file={tmp_path / 'secret' / 'k.key'}"
    cases = {
        "index": (lambda: index.main([str(tmp_path / "dicom"), "--out",
                                      str(a_file / "manifest.csv"), key]),
                  "a_file is a file, not a folder"),
        "report": (lambda: report.main([str(a_file)]), "a_file: not a folder"),
        "phantom": (lambda: phantom(["--out", str(a_file / "cohort"), "--subjects", "1",
                                     "--no-progress"]), "a_file"),
        "bench": (lambda: bench(["--render", "--out", str(tmp_path / "bench")]),
                  "results.json: not valid JSON"),
    }
    for command, (run, said) in cases.items():
        assert run() == 2, command
        assert said in _err_line(capsys, command)
    assert not (tmp_path / "secret").exists()  # index stopped before creating its key


def test_user_errors_are_recognised_without_loading_heavy_modules():
    code = ("import sys, bone_age.utils.errors as e; "
            "assert not {'torch', 'hydra', 'omegaconf'} & set(sys.modules), sys.modules.keys(); "
            "print(e.user_error_message(FileNotFoundError(2, 'No such file', 'x.csv')), "
            "e.user_error_message(KeyError('bug')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "x.csv: No such file None"


def test_config_errors_wrapped_by_hydra_are_user_errors():
    from hydra.errors import InstantiationException

    from bone_age.data import ManifestError

    wrapped = InstantiationException("Error in call to target 'X':\nValueError(...)")
    wrapped.__cause__ = ValueError("data.fold must be in 0..4, got 7")
    assert errors.user_error_message(wrapped) == "data.fold must be in 0..4, got 7"
    assert errors.user_error_message(ManifestError("m.csv: bad")) == "m.csv: bad"
    bug = InstantiationException("Error in call to target 'X':\nKeyError('k')")
    bug.__cause__ = KeyError("k")
    assert errors.user_error_message(bug) == "Error in call to target 'X': KeyError: 'k'"

    class MisconfigurationException(Exception):  # what Lightning raises, no ValueError
        pass

    lightning = InstantiationException("Error in call to target 'Trainer':\nMisc...")
    lightning.__cause__ = MisconfigurationException("No supported gpu backend found!")
    assert errors.user_error_message(lightning) == ("Error in call to target 'Trainer': "
                                                    "MisconfigurationException: No supported "
                                                    "gpu backend found!")
    assert errors.user_error_message(AttributeError("a bug")) is None


def test_explain_never_writes_outside_its_folder(tiny, tmp_path, capsys):
    lines = tiny["manifest"].read_text().splitlines()
    first = lines[1].split(",")
    base = tiny["manifest"].parent
    first[0], first[3], first[4] = "../escaped", str(base / first[3]), str(base / first[4])
    manifest = tmp_path / "m.csv"
    manifest.write_text(lines[0] + "\n" + ",".join(first) + "\n")
    out = tmp_path / "deep" / "x"
    assert explain.main([str(tiny["ckpt"]), str(manifest), "--out", str(out)]) == 2
    assert "subject_id '../escaped' cannot name a file" in _err_line(capsys, "explain")
    assert not list(tmp_path.glob("deep/*.png")) and not out.exists()


def test_every_error_class_of_the_package_derives_from_one_base():
    import importlib
    import inspect
    import pkgutil

    import bone_age
    from bone_age.utils.errors import BoneAgeError

    skip = ("bone_age.bench", "bone_age.run", "bone_age.phantom.__main__")
    found = []
    for info in pkgutil.walk_packages(bone_age.__path__, "bone_age."):
        if info.name.startswith(skip):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == info.name and issubclass(cls, Exception):
                found.append(cls)
                assert issubclass(cls, BoneAgeError), cls
    assert len(found) >= 10


def test_nothing_predicted_is_one_line_naming_the_file_of_reasons(tiny, tmp_path, capsys):
    from bone_age.evaluation import evaluate

    with tiny["manifest"].open() as f:
        rows = list(csv.DictReader(f))[:3]
    for r in rows:
        r["sex"] = ""  # refused by a model that uses sex, each with its reason
        r["anterior"] = str(tiny["manifest"].parent / r["anterior"])
        r["posterior"] = str(tiny["manifest"].parent / r["posterior"])
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sex_model = str(_sex_model(tiny, tmp_path / "sex.ckpt"))
    capsys.readouterr()
    for name, run, out in (
            ("predict", predict.main, tmp_path / "p.csv"),
            ("evaluate", evaluate.main, tmp_path / "eval")):
        assert run([sex_model, str(manifest), "--out", str(out)]) == 2
        line = _err_line(capsys, name)  # one line, not one per study
        listing = out.with_name(out.name + ".refused.csv")
        assert "no study could be predicted: 3 refused" in line and str(listing) in line
        listed = list(csv.DictReader(listing.open()))
        assert [r["subject_id"] for r in listed] == [r["subject_id"] for r in rows]
        assert all("uses sex as an input" in r["reason"] for r in listed)
        assert not out.exists()


def test_a_bad_command_line_is_one_line(tmp_path, capsys):
    from bone_age import index
    from bone_age.evaluation import evaluate
    from bone_age.evaluation import table1 as report
    from bone_age.phantom.__main__ import main as phantom

    cases = {
        "predict": (predict.main, ["only_one_argument"], "required"),
        "evaluate": (evaluate.main, ["a.ckpt", "m.csv"], "required: --out"),
        "export": (export.main, [], "required"),
        "explain": (explain.main, ["a.ckpt", "x.dcm", "--scale", "0"], "--scale"),
        "report": (report.main, [], "required"),
        "index": (index.main, [str(tmp_path), "--age-range", "nan", "nan"], "finite"),
        "phantom": (phantom, ["--out", str(tmp_path / "c"), "--variability", "inf"], "finite"),
    }
    capsys.readouterr()
    for name, (main, argv, said) in cases.items():
        assert main(argv) == 2, name
        line = _err_line(capsys, name)
        assert said in line and "--help" in line, line
    assert not (tmp_path / "c").exists()


def _finished_copy(tiny: dict, tmp_path: Path) -> Path:
    copy_ = tmp_path / "copy"
    shutil.copytree(tiny["last"].parent.parent, copy_)
    return copy_


METRICS_CASES = {  # issue 37, item 10: none of these is a finished run's metrics.json
    "mae_only": ('{"mae": 1.0}', "baseline_mae is None"),
    "mae_nan": ('{"mae": NaN}', "mae is nan"),
    "pearson_text": (None, "pearson_r is 'x'"),
    "n_test_zero": (None, "n_test is 0"),
    "list": ("[1, 2]", "holds a list"),
    "deep": ("[" * 100_000 + "]" * 100_000, "not JSON"),
    "binary": (b"\xff\xfe\x00garbage", "not JSON"),
    "fifo": (None, "not a regular file (a FIFO)"),
    "folder": (None, "not a regular file (a folder)"),
}


@pytest.mark.parametrize("case", sorted(METRICS_CASES))
def test_resume_refuses_a_metrics_file_that_is_not_a_finished_runs(tiny, tmp_path, case):
    """Taken as finished, such a file ended in KeyError in the run summary (or, a FIFO, hung)."""
    content, said = METRICS_CASES[case]
    run = _finished_copy(tiny, tmp_path)
    metrics = run / "metrics.json"
    good = json.loads(metrics.read_text())
    metrics.unlink()
    if case == "fifo":
        os.mkfifo(metrics)
    elif case == "folder":
        metrics.mkdir()
    elif content is None:
        key, value = ("pearson_r", "x") if case == "pearson_text" else ("n_test", 0)
        metrics.write_text(json.dumps(dict(good, **{key: value})))
    elif isinstance(content, bytes):
        metrics.write_bytes(content)
    else:
        metrics.write_text(content)
    with pytest.raises(ResumeError) as err:
        run_in_process([*tiny["overrides"], "resume=true"], run)
    message = errors.user_error_message(err.value)
    assert message.startswith(f"{metrics}: not a finished run's metrics file (") and \
        said in message and "delete it to run again, or set resume=false" in message, message
    assert "\n" not in message


def _malicious_pickle(path: Path) -> None:
    """A checkpoint whose unpickling would run code (os.system): torch refuses it."""
    import pickle
    import zipfile

    class Boom:
        def __reduce__(self):
            return os.system, ("touch /tmp/bone_age_boom",)

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": Boom()}))
        z.writestr("archive/version", "3\n")


@pytest.mark.parametrize("case", ["garbage", "malicious", "other_network", "empty"])
def test_resume_refuses_a_damaged_tested_checkpoint_in_one_line(tiny, tmp_path, case):
    """Issue 37, item 10: the checkpoint ``trainer.test`` loads (checkpoints/epochNNN.ckpt) was
    replaced in an unfinished run: one line naming it, never an UnpicklingError traceback."""
    run = _finished_copy(tiny, tmp_path)
    (run / "metrics.json").unlink()  # unfinished: resume continues it, then tests
    tested = run / "checkpoints" / tiny["ckpt"].name
    if case == "garbage":
        tested.write_bytes(os.urandom(3000))
    elif case == "malicious":
        _malicious_pickle(tested)
    elif case == "empty":
        tested.write_bytes(b"")
    else:
        _changed(tiny, tested, lambda c: c["state_dict"].pop("net.head.bias"))
    with pytest.raises(ResumeError) as err:
        run_in_process([*tiny["overrides"], "resume=true"], run)
    message = errors.user_error_message(err.value)
    assert message.startswith(str(tested)) and "\n" not in message, message
    assert "checkpoints folder to start the run over" in message, message
    assert not (run / "metrics.json").exists() and not Path("/tmp/bone_age_boom").exists()
