"""The settings users type are checked once, when a run starts: one line naming the key, the
value and what is allowed, exit 2, before Hydra creates the run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from bone_age.training.settings import SettingsError, check_output_folder, check_settings
from tests.conftest import CONF_DIR, tiny_overrides


def _cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        # With Hydra's own node, as the run checks it (${hydra:...} values resolve).
        return compose("config", overrides=overrides, return_hydra_config=True)


BAD = {
    # override: what the one line must say
    "data.batch_size=0": "data.batch_size must be a whole number >= 1, got 0",
    "data.batch_size=-1": "data.batch_size must be a whole number >= 1, got -1",
    "data.percentile=150": "data.percentile must be a number > 0 and <= 100, got 150",
    "seed=abc": "seed must be a whole number from 0 to 4294967295, got 'abc'",
    "threads=0": "threads must be one of 'auto' or a whole number >= 1, got 0",
    "module.optimizer.lr=-1": "module.optimizer.lr must be a number > 0, got -1",
    "module.optimizer.lr=nan": "module.optimizer.lr must be a number > 0, got nan",
    "+module.optimizer.weight_decay=-0.1": "module.optimizer.weight_decay must be a number >= 0",
    "data.mirror_posterior=maybe": "data.mirror_posterior must be true or false, got 'maybe'",
    "data.image_size=32": "data.image_size must be [height, width], whole numbers from 8 to "
                          "4096, got 32",
    "data.image_size=[32,0]": "data.image_size must be [height, width]",
    "test_ckpt=worst": "test_ckpt must be one of 'best', 'last', got 'worst'",
    "trainer.max_epochs=-5": "trainer.max_epochs must be a whole number >= 1, got -5",
    "trainer.precision=8-bit": "trainer.precision must be one of 64, 32, 16",
    "data.val_fraction=1": "data.val_fraction must be a number > 0 and < 0.5, got 1",
    "data.num_folds=1": "data.num_folds must be a whole number >= 2, got 1",
    "data.resize=crop": "data.resize must be one of 'stretch', 'pad', got 'crop'",
    "data.normalize=max": "data.normalize must be one of 'percentile', 'total'",
    "data.num_workers=many": "data.num_workers must be a whole number >= 0 or one of 'auto'",
    "data.subjects=0": "data.subjects must be null or a whole number >= 1, got 0",
    "data.split=random": "data.split must be one of 'stratified', 'site', got 'random'",
    "model.views=3": "model.views must be one of 1, 2, got 3",
    "model.dropout=1.5": "model.dropout must be a number >= 0 and < 1, got 1.5",
    "model.pretrained=yes": "model.pretrained must be true or false, got 'yes'",
    "loss.lambda_var=-1": "loss.lambda_var must be a number >= 0, got -1",
    "loss.min_age=80": "loss.max_age must be above loss.min_age (80), got 80",
    "augment.dose_min=0": "augment.dose_min must be a number > 0 and <= 1, got 0",
    "scheduler.factor=2": "scheduler.factor must be a number > 0 and < 1, got 2",
}


@pytest.mark.parametrize("override", sorted(BAD))
def test_a_bad_setting_is_one_line_naming_key_value_and_what_is_allowed(override):
    with pytest.raises(SettingsError) as err:
        check_settings(_cfg([override]))
    assert BAD[override] in str(err.value) and "\n" not in str(err.value)


def test_good_settings_pass(tmp_path):
    check_settings(_cfg([]))  # the defaults (phantom)
    check_settings(_cfg(tiny_overrides(tmp_path / "m.csv", tmp_path)))
    # Every preset and group option of conf/ (trainer=gpu needs a GPU: tested below)
    for group in ("experiment", "model", "loss", "scheduler", "augment", "trainer", "logger"):
        for option in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
            if option.stem in ("default", "gpu") and group != "augment":
                continue
            check_settings(_cfg([f"{group}={option.stem}"]))
    check_settings(_cfg(["experiment=ablation_sex", *tiny_overrides(tmp_path / "m.csv", tmp_path),
                         "data.subjects=null"]))


def test_a_manifest_run_without_its_manifest_says_what_to_add():
    with pytest.raises(SettingsError, match=r"data.manifest is not set: .*data.manifest=PATH"):
        check_settings(_cfg(["data=manifest"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_run_without_a_gpu_says_why():
    with pytest.raises(SettingsError, match="no CUDA GPU is visible.*CUDA_VISIBLE_DEVICES"):
        check_settings(_cfg(["trainer=gpu"]))


def test_output_folders_must_be_folders_that_can_be_written(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    check_output_folder("hydra.run.dir", tmp_path / "new" / "deeper")
    with pytest.raises(SettingsError, match="a_file is a file, not a folder"):
        check_output_folder("hydra.run.dir", a_file / "run")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SettingsError, match="cannot be written"):
            check_output_folder("hydra.run.dir", locked / "run")


@pytest.mark.parametrize("override, said", [
    ("data.batch_size=0", "data.batch_size must be a whole number >= 1, got 0"),
    ("hydra.run.dir={a_file}/run", "a_file is a file, not a folder"),
    ("data.manifest=???", "data.manifest is not set"),
    ("trainer.max_epochs=-5", "trainer.max_epochs must be a whole number >= 1, got -5"),
])
def test_the_command_ends_in_one_line_before_creating_the_run_folder(
        tmp_path, override, said):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "bone_age.run", *tiny_overrides(tmp_path / "m.csv", tmp_path),
           f"hydra.run.dir={run}", override.format(a_file=a_file)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    said_all = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, said_all
    assert said_all.splitlines() == [said_all] and said_all.startswith("bone-age run: ")
    assert said in said_all and "HYDRA_FULL_ERROR" not in said_all
    assert not run.exists()
