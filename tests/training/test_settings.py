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

from bone_age.training.settings_check import SettingsError, check_output_folder, check_settings
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
    "yes=maybe": "yes must be true or false, got 'maybe'",
    # Leave-one-site-out's folds checked against the cohort's sites (issue 33 item 5).
    "data.split=site": "data.split=site needs at least 2 sites; the cohort has 1",
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


def test_a_site_fold_the_cohort_lacks_is_refused_before_the_run():
    with pytest.raises(SettingsError, match=r"^data.fold must be in 0..2 \(data.split=site: one "
                                            r"fold per site, 3 sites\), got 3; sweep "
                                            r"data.fold=0,1,2$"):
        check_settings(_cfg(["data.split=site", "+data.phantom_options.sites=3",
                             "data.fold=3"]))
    check_settings(_cfg(["data.split=site", "+data.phantom_options.sites=3", "data.fold=2"]))


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


# Settings outside the table: the libraries' own checks, run on throw-away objects before the
# run folder exists (issue 37, item 4). Each was a traceback, silently taken, or refused only
# after .hydra/, run.log and the lock existed.
BUILT = {
    "scheduler.mode=sideways": "scheduler.mode must be one of 'min', 'max'",
    "scheduler=cosine scheduler.T_max=0": "scheduler.T_max=0 is refused by "
                                          "torch.optim.lr_scheduler.CosineAnnealingLR",
    "callbacks.progress.every_s=abc": "callbacks.progress.every_s must be a number > 0, got 'abc'",
    "+data.phantom_options.sigma=-1": "data.phantom_options: sigma must be a finite number >= 0",
    "+data.phantom_options.sites=0": "data.phantom_options: sites must be a whole number from 1",
    "+data.phantom_options.bogus=1": "data.phantom_options: unknown phantom option(s) bogus; the "
                                     "options are layout, sigma, sites, transfer_syntax",
    "+module.optimizer.eps=-1": "module.optimizer.eps=-1 is refused by torch.optim.Adam "
                                "(ValueError: Invalid epsilon value",
    "+module.optimizer.betas=[2,2]": "module.optimizer.betas=[2, 2] is refused by torch.optim.Adam",
    "+trainer.accumulate_grad_batches=0": "trainer.accumulate_grad_batches must be a whole "
                                          "number >= 1, got 0",
    "+trainer.check_val_every_n_epoch=0": "trainer.check_val_every_n_epoch must be null or a "
                                          "whole number >= 1, got 0",
    "+module.optimizer.amsgrad=maybe": "module.optimizer.amsgrad must be true or false",
    "+trainer.gradient_clip_val=-1": "trainer.gradient_clip_val must be null or a number >= 0",
    "+trainer.min_epochs=-1": "trainer.min_epochs must be null or a whole number >= 0, got -1",
    "+callbacks.early_stopping.min_delta=nan": "callbacks.early_stopping.min_delta must be a "
                                               "number >= 0, got nan",
    "data.fold=7": "data.fold must be in 0..4, got 7",
    "data.val_fraction=0.7": "data.val_fraction must be a number > 0 and < 0.5, got 0.7",
    # more of the same causes
    "+module.optimizer.bogus=1": "module.optimizer.bogus is not a setting of torch.optim.Adam "
                                 "(its settings: amsgrad, betas",
    "+trainer.bogus=1": "trainer.bogus is not a setting of pytorch_lightning.Trainer",
    "+model.bogus=1": "model.bogus is not a setting of bone_age.models.BoneAgeNet",
    "+trainer.gradient_clip_algorithm=sideways": "trainer.gradient_clip_algorithm='sideways' is "
                                                 "refused by pytorch_lightning.Trainer",
    "callbacks.early_stopping.mode=up": "callbacks.early_stopping.mode='up' is refused by "
                                        "pytorch_lightning.callbacks.EarlyStopping",
    "+callbacks.model_checkpoint.save_top_k=-5": "callbacks.model_checkpoint.save_top_k=-5 is "
                                                 "refused by",
    "+scheduler.threshold_mode=up": "scheduler.threshold_mode must be one of 'rel', 'abs'",
    "scheduler=cosine +scheduler.eta_min=abc": "scheduler.eta_min must be a number",
    "+scheduler.threshold=nan": "scheduler.threshold must be a number, got nan",
    "+data.phantom_options.variability=inf": "data.phantom_options: variability must be a finite",
    "+data.phantom_options.layout=sideways": "data.phantom_options: layout must be one of",
    "data.split=site data.fold=-1": "data.fold must be a whole number >= 0, got -1",
    "+trainer.max_steps=-2": "trainer.max_steps must be a whole number >= -1, got -2",
    "+trainer.min_epochs=5 trainer.max_epochs=2": "trainer.min_epochs must be at most "
                                                  "trainer.max_epochs (2), got 5",
    "+trainer.detect_anomaly=maybe": "trainer.detect_anomaly must be true or false",
    "model.backbone=no_such_net": "model.backbone: 'no_such_net' is not a timm architecture",
    "model.weights=/no/such/weights.pth": "model.weights: file not found: /no/such/weights.pth",
    "module.optimizer._target_=torch.optim.NoSuch": "module.optimizer._target_ must name a class",
    "callbacks.divergence._target_=no.such.Callback": "callbacks.divergence._target_ must name",
}


@pytest.mark.parametrize("overrides", sorted(BUILT))
def test_a_setting_outside_the_table_is_checked_by_its_library_in_one_line(overrides, tmp_path):
    cfg = _cfg([*overrides.split(), f"hydra.run.dir={tmp_path / 'run'}",
                f"paths.data_dir={tmp_path / 'data'}"])
    with pytest.raises(SettingsError) as err:
        check_settings(cfg)
    assert BUILT[overrides] in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # the dry build makes no folder, no cache, no logs


def test_the_dry_build_takes_every_preset_and_makes_nothing(tmp_path):
    for extra in ([], ["scheduler=cosine"], ["scheduler=none"], ["trainer=ddp"],
                  ["logger=tensorboard"], ["+trainer.gradient_clip_val=1.0",
                                           "+trainer.accumulate_grad_batches=2",
                                           "+data.phantom_options.sites=3",
                                           "+module.optimizer.betas=[0.9,0.99]"]):
        check_settings(_cfg([*extra, f"hydra.run.dir={tmp_path / 'run'}",
                             f"paths.data_dir={tmp_path / 'data'}"]))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("override, said", [
    ("scheduler=cosine scheduler.T_max=0", "scheduler.T_max=0 is refused by"),
    ("+module.optimizer.betas=[2,2]", "module.optimizer.betas=[2, 2] is refused by"),
    ("+trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch must be"),
    ("data.fold=7", "data.fold must be in 0..4, got 7"),
])
def test_a_library_refusal_ends_the_command_in_one_line_before_the_run_folder(
        tmp_path, override, said):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "bone_age.run", *tiny_overrides(tmp_path / "m.csv", tmp_path),
           f"hydra.run.dir={run}", *override.split()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    said_all = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, said_all
    assert said_all.splitlines() == [said_all] and said_all.startswith("bone-age run: ")
    assert said in said_all
    assert not run.exists()


def test_an_instantiation_error_names_the_node():
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from bone_age.utils.errors import user_error_message

    with pytest.raises(InstantiationException) as err:
        instantiate({"callbacks": {"odd": {"_target_": "builtins.int", "bogus": 1}}})
    message = user_error_message(err.value)
    assert message.startswith("callbacks.odd: ") and "\n" not in message
