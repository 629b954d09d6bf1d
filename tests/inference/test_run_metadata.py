"""The run-metadata record: built from training's objects, read back, older versions accepted."""

from __future__ import annotations

import pytest

from bone_age.data.preprocess import Preprocess
from bone_age.data.transforms import CountNormalize
from bone_age.inference.run_metadata import METADATA_VERSION, CheckpointError, RunMetadata
from bone_age.losses import MeanVarianceLoss, MSELoss


def _record(loss=None) -> RunMetadata:
    return RunMetadata.build(
        model={"_target_": "bone_age.models.BoneAgeNet", "backbone": "test_resnet", "views": 2,
               "pretrained": True}, loss=loss or MeanVarianceLoss(lambda_var=0.1),
        preprocess=Preprocess((64, 32), "pad", False), normalize=CountNormalize("total"),
        views=("anterior", "posterior"), run={"model": "multi_vgg16", "fold": 2, "odd": [1]})


def test_build_and_read_back():
    record = _record()
    meta = record.to_dict()
    assert meta["version"] == METADATA_VERSION
    # Never ImageNet weights at inference: the state dict carries the trained weights.
    assert meta["model"]["pretrained"] is False and "_target_" not in meta["model"]
    assert meta["model"]["num_outputs"] == 41 and meta["run"] == {"model": "multi_vgg16",
                                                                  "fold": 2}
    again = RunMetadata(meta, "x.ckpt")
    assert again.loss == MeanVarianceLoss(lambda_var=0.1)
    assert again.preprocess == Preprocess((64, 32), "pad", False)
    assert again.normalize().method == "total" and again.image_size == (64, 32)
    assert again.views == ("anterior", "posterior") and not again.mirror_posterior


def test_version_1_records_are_read():
    # As bone-age wrote them before the restructure: every loss with the mean-variance weights.
    meta = _record(MSELoss()).to_dict()
    meta.update(version=1, loss={"name": "mse", "min_age": 40, "max_age": 80,
                                 "lambda_mean": 0.2, "lambda_var": 0.05})
    assert RunMetadata(meta, "old.ckpt").loss == MSELoss()
    meta["version"] = 2  # the same loss settings are an error in a version-2 record
    with pytest.raises(CheckpointError, match="old.ckpt: settings bone_age.loss: .*lambda"):
        RunMetadata(meta, "old.ckpt")


@pytest.mark.parametrize("version, message", [(METADATA_VERSION + 1, "newer bone-age"),
                                              ("2", "positive integer"), (0, "positive")])
def test_unknown_versions_are_refused(version, message):
    meta = {**_record().to_dict(), "version": version}
    with pytest.raises(CheckpointError, match=message):
        RunMetadata(meta, "m.ckpt")
