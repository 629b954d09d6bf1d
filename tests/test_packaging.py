"""A non-editable install (``pip install .``) carries the configs: ``bone_age.run`` composes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_listed_packages_are_the_tree():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    code = set(find_packages(str(ROOT), include=["bone_age*"]))
    confs = {("bone_age.conf." + ".".join(d.relative_to(ROOT / "conf").parts)).rstrip(".")
             for d in (ROOT / "conf").rglob("*") if d.is_dir()} | {"bone_age.conf"}
    assert listed == code | confs


def test_wheel_install_finds_its_configs(tmp_path):
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Built from a copy: setuptools leaves build/ beside the sources it builds.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    for name in ("bone_age", "conf"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", str(source), "-w", str(wheels)], check=True, env=env,
                   capture_output=True, cwd=tmp_path)
    wheel = next(wheels.glob("bone_age-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, env=env, capture_output=True)
    # The wheel's copy comes first on the path; the checkout's conf/ is nowhere near.
    env = {**env, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import bone_age.utils.configs as c; "
                            "print(c.__file__); print(c.CONF_DIR)"], env=env, cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(str(target)) and where[1] == str(target / "bone_age" / "conf")
    composed = subprocess.run([sys.executable, "-m", "bone_age.run", "--cfg", "job",
                               "experiment=quickstart"], env=env, cwd=elsewhere,
                              capture_output=True, text=True)
    assert composed.returncode == 0, composed.stderr[-2000:]
    assert "backbone: resnet10t" in composed.stdout and "max_epochs: 20" in composed.stdout


def test_make_says_what_it_installs_before_the_long_silent_part():
    """The first `make run` / `make test` names its set-up before pip's quiet minutes."""
    recipe = (ROOT / "Makefile").read_text().split("$(STAMP): pyproject.toml\n", 1)[1]
    lines = recipe.split("\n\n", 1)[0].splitlines()
    assert lines[0].lstrip().startswith("@echo") and "about 3 minutes" in lines[0]
    assert any("pip install" in line for line in lines[1:])
