"""Optional parts (wandb, tensorboard, ONNX, captum): a missing one is a one-line install hint."""

from __future__ import annotations

import sys

import pytest

from bone_age.utils.errors import user_error_message
from bone_age.utils.extras import EXTRAS, MissingExtraError, require


def _missing(monkeypatch, *modules: str) -> None:
    for name in modules:  # a None entry makes `import name` raise ImportError
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra(monkeypatch):
    assert require("json", "a test").__name__ == "json"
    _missing(monkeypatch, "onnxruntime")
    with pytest.raises(MissingExtraError, match=r"pip install 'bone-age\[onnx\]'"):
        require("onnxruntime", "running an ONNX model")
    assert set(EXTRAS.values()) == {"wandb", "tensorboard", "onnx", "explain"}


def test_pyproject_extras_match(monkeypatch):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for module, extra in EXTRAS.items():
        assert any(dep.startswith(module) for dep in extras[extra]), (module, extra)
        assert not any(dep.startswith(module) for dep in project["dependencies"]), module


def test_explain_without_captum_is_one_line(monkeypatch, capsys, tmp_path):
    from bone_age.inference.explain import main

    _missing(monkeypatch, "captum", "captum.attr")
    assert main([str(tmp_path / "x.ckpt"), str(tmp_path / "x.dcm"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'bone-age[explain]'" in err
    assert not (tmp_path / "out").exists()


def test_export_without_onnx_is_one_line(runs, monkeypatch, capsys, tmp_path):  # noqa: F811
    from bone_age.inference.export import main

    _missing(monkeypatch, "onnx", "onnxscript")
    assert main([str(runs["multi_vgg16"]), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'bone-age[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()


def test_loggers_without_their_package_are_one_line(monkeypatch, tmp_path):
    from hydra.errors import InstantiationException

    from bone_age.evaluation import tracking

    _missing(monkeypatch, "wandb", "tensorboard")
    for build, extra in ((lambda: tracking.wandb_logger("p", str(tmp_path), "n"), "wandb"),
                         (lambda: tracking.tensorboard_logger(str(tmp_path)), "tensorboard")):
        with pytest.raises(MissingExtraError) as info:
            build()
        wrapped = InstantiationException("Error in call to target")
        wrapped.__cause__ = info.value  # as Hydra's instantiate raises it in a run
        assert f"pip install 'bone-age[{extra}]'" in user_error_message(wrapped)


def test_training_and_prediction_need_no_extra(cohort, tmp_path):
    """A run (logger=csv) and predict from its checkpoint with every optional package hidden."""
    import subprocess
    from pathlib import Path

    from tests.conftest import tiny_overrides

    run = tmp_path / "run"
    blocker = f"""
import runpy, sys
for name in {sorted(EXTRAS)!r}:  # as if not installed: import fails, find_spec gives None
    sys.modules[name] = None
sys.argv = ["bone_age.run", *{tiny_overrides(cohort, tmp_path)!r}, "hydra.run.dir={run}"]
try:
    runpy.run_module("bone_age.run", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
from bone_age.inference.predict import main
ckpt = next((__import__("pathlib").Path("{run}") / "checkpoints").glob("epoch*.ckpt"))
assert main([str(ckpt), "{cohort}", "--out", "{tmp_path / 'p.csv'}"]) == 0
assert not [m for m, v in sys.modules.items() if v is not None
            and m.split(".")[0] in {sorted(EXTRAS)!r}]
"""
    proc = subprocess.run([sys.executable, "-c", blocker], cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "metrics.json").exists() and (tmp_path / "p.csv").exists()

