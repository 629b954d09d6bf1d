"""No silent wrong numbers from reduced precision: bf16 on the CPU runs only where it computes
what float32 computes (oneDNN's AMX kernels capped, the run's network checked at the start),
an evaluation pass that disagrees with float32 ends the run in one line with no results, and a
model that has not learned is said to be so."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from bone_age.evaluation.results import prediction_spread
from bone_age.models import BoneAgeNet
from bone_age.training import precision
from bone_age.training.callbacks.divergence import PrecisionMismatch
from bone_age.training.module import BoneAgeModule
from bone_age.utils.onednn import cap_isa_without_amx
from tests.conftest import run_in_process, tiny_overrides

# Images large enough that no strided convolution runs over a sliver (the start-up check's
# shape rule): bf16 then really runs, and what is tested is the numbers.
CPU_BF16 = ["data.image_size=[96,48]", "trainer.precision=bf16-mixed"]


@pytest.fixture
def cpu_bf16(monkeypatch):
    """bf16 really runs in these tests, also on a CPU without native bf16 (emulated)."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_the_isa_cap_is_set_on_amx_cpus_only_and_never_over_the_users(monkeypatch, machine):
    monkeypatch.setattr("platform.machine", lambda: machine)
    env: dict[str, str] = {}
    assert cap_isa_without_amx(env, {"avx512_bf16", "amx_bf16", "amx_tile"}) == \
        "AVX512_CORE_BF16"
    assert env == {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}
    env = {}
    assert cap_isa_without_amx(env, {"avx512_bf16"}) is None and env == {}
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        env = {name: "AVX512_CORE_AMX"}
        assert cap_isa_without_amx(env, {"amx_bf16"}) is None
        assert env == {name: "AVX512_CORE_AMX"}
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert cap_isa_without_amx({}, {"amx_bf16"}) is None


@pytest.mark.skipif(not (torch.backends.mkldnn.is_available() and precision.cpu_has_bf16()),
                    reason="this CPU computes no bf16 natively")
def test_bf16_convolutions_of_this_process_do_not_run_on_amx():
    # What oneDNN itself says it runs (verbose), after the tests before this one used it.
    kernel = precision.onednn_bf16_kernel()
    assert kernel and "amx" not in kernel.lower(), kernel
    assert precision.onednn_bf16_kernel() == kernel  # asked again: the same, still captured


def test_bf16_falls_back_to_float32_where_onednn_would_run_amx(cpu_bf16, caplog):
    cpu = {"precision": "bf16-mixed", "accelerator": "cpu"}
    assert precision.supported_precision(cpu, lambda: "jit_bf16:avx512_core_bf16") == \
        "bf16-mixed"
    with caplog.at_level(logging.WARNING):
        assert precision.supported_precision(
            cpu, lambda: "brg_conv_fwd:avx512_core_amx (Intel AMX)") == "32-true"
    assert "AMX" in caplog.text and "32-true" in caplog.text


class _BrokenUnderAutocast(nn.Module):
    """A network whose bf16 forward goes wrong: garbage logits, as seen on AMX CPUs."""

    def __init__(self, fault: str) -> None:
        super().__init__()
        self.net, self.fault = BoneAgeNet(backbone="test_resnet", views=2, num_outputs=41), fault

    def forward(self, images, sex=None):
        out = self.net(images, sex)
        if torch.is_autocast_enabled("cpu"):
            return out * 2e7 if self.fault == "garbage" else out + torch.nan
        return out


def _decode(outputs: torch.Tensor) -> torch.Tensor:
    probs = outputs.float().softmax(-1)
    return (probs * torch.arange(40, 81, dtype=torch.float32)).sum(-1)


def test_the_start_up_check_passes_a_sound_network_and_names_a_broken_one():
    shape = (4, 2, 3, 96, 48)
    sound = BoneAgeNet(backbone="test_resnet", views=2, num_outputs=41)
    state = torch.random.get_rng_state()
    assert precision.bf16_disagreement(sound, _decode, shape) is None
    assert torch.equal(torch.random.get_rng_state(), state)  # the run's random draws unchanged
    assert "decoded ages up to" in precision.bf16_disagreement(
        _BrokenUnderAutocast("garbage"), _decode, shape)
    assert "non-finite outputs" in precision.bf16_disagreement(
        _BrokenUnderAutocast("nan"), _decode, shape)


def test_the_shape_rule_refuses_strided_convolutions_over_slivers():
    decode = _decode
    for backbone, size, refused in (("test_resnet", (32, 16), True),
                                    ("test_resnet", (64, 32), True),
                                    ("resnet10t", (64, 32), True),
                                    ("test_resnet", (96, 48), False),
                                    ("resnet10t", (128, 64), False)):
        net = BoneAgeNet(backbone=backbone, views=2, num_outputs=41)
        why = precision.bf16_disagreement(net, decode, (8, 2, 3, *size), repeats=1)
        assert (why is not None and "strided convolution" in why) == refused, (backbone, why)


def test_the_tiny_bf16_command_runs_in_float32_with_one_warning(cpu_bf16, cohort, tmp_path,
                                                                caplog):
    # The command (test_resnet at 32 x 16, bf16-mixed) and the same run in float32:
    # decided from the shapes, so the same numbers every time.
    with caplog.at_level(logging.WARNING):
        bf16 = run_in_process([*tiny_overrides(cohort, tmp_path / "a"),
                               "trainer.precision=bf16-mixed"], tmp_path / "bf16")
    fp32 = run_in_process(tiny_overrides(cohort, tmp_path / "b"), tmp_path / "fp32")
    warned = [r.getMessage() for r in caplog.records if "-> 32-true" in r.getMessage()]
    assert len(warned) == 1 and "strided convolution" in warned[0]
    assert bf16["settings"]["trainer.precision"] == "32-true"
    assert bf16["mae"] == fp32["mae"]


def test_a_run_whose_network_fails_the_check_runs_in_float32(cpu_bf16, cohort, tmp_path,
                                                              monkeypatch, caplog):
    forward = BoneAgeNet.forward

    def garbage_under_autocast(self, images, sex=None):
        out = forward(self, images, sex)
        return out * 2e7 if torch.is_autocast_enabled("cpu") else out

    monkeypatch.setattr(BoneAgeNet, "forward", garbage_under_autocast)
    with caplog.at_level(logging.WARNING):
        metrics = run_in_process([*tiny_overrides(cohort, tmp_path), *CPU_BF16],
                                 tmp_path / "run")
    assert metrics["settings"]["trainer.precision"] == "32-true"  # recorded as what ran
    assert "trainer.precision bf16-mixed -> 32-true" in caplog.text
    assert "float32_check" not in metrics and np.isfinite(metrics["mae"])


def test_garbage_from_a_bf16_evaluation_pass_ends_the_run_without_results(
        cpu_bf16, cohort, tmp_path, monkeypatch):
    # Sound at the start-up check and in training; the tested weights' first bf16 forward
    # predicts one age for everyone, as the garbage run of the issue did (50.0 y for all).
    forward = BoneAgeModule.forward

    def constant_when_testing(self, images, sex=None):
        out = forward(self, images, sex)
        if self.trainer.testing and torch.is_autocast_enabled("cpu"):
            return torch.zeros_like(out).index_fill_(1, torch.tensor([10]), 50.0)
        return out

    monkeypatch.setattr(BoneAgeModule, "forward", constant_when_testing)
    out = tmp_path / "run"
    with pytest.raises(PrecisionMismatch) as err:
        run_in_process([*tiny_overrides(cohort, tmp_path), "loss=softmax", *CPU_BF16], out)
    message = str(err.value)
    assert "\n" not in message and "bf16-mixed predict ages up to" in message
    assert "trainer.precision=32-true" in message
    assert not (out / "metrics.json").exists() and not (out / "predictions.csv").exists()


def test_a_sound_bf16_evaluation_pass_records_its_float32_check(cpu_bf16, cohort, tmp_path):
    metrics = run_in_process([*tiny_overrides(cohort, tmp_path), *CPU_BF16], tmp_path / "run")
    if metrics["settings"]["trainer.precision"] != "bf16-mixed":
        pytest.skip("bf16 refused at the start on this CPU (its warning says why)")
    check = metrics["float32_check"]
    assert check["studies"] == min(8, metrics["n_test"]) and check["off"] == 0  # first batch
    assert 0.0 <= check["max_gap_y"] <= precision.AGE_TOLERANCE_Y


def test_prediction_spread_flags_a_model_that_has_not_learned(caplog):
    age = np.linspace(40, 80, 30)
    with caplog.at_level(logging.WARNING):
        learned = prediction_spread(0.5 * age + 30, age)
    assert learned["not_learned"] is False and learned["pred_age_sd"] > 5 and not caplog.text
    with caplog.at_level(logging.WARNING):
        flat = prediction_spread(np.full(30, 59.99) + np.linspace(0, 0.01, 30), age)
    assert flat["not_learned"] is True and flat["pred_age_sd"] < 0.01
    assert len(caplog.records) == 1 and "not learned" in caplog.text
    assert prediction_spread(np.array([60.0]), np.array([61.0]))["not_learned"] is False


def test_a_run_predicting_one_age_for_all_is_a_result_flagged_not_learned(
        cohort, tmp_path, monkeypatch, caplog):
    forward = BoneAgeModule.forward

    def constant_when_testing(self, images, sex=None):
        out = forward(self, images, sex)
        return torch.zeros_like(out) if self.trainer.testing else out

    monkeypatch.setattr(BoneAgeModule, "forward", constant_when_testing)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        metrics = run_in_process(tiny_overrides(cohort, tmp_path), out)
    written = json.loads((out / "metrics.json").read_text())
    assert written["not_learned"] is True and written["pred_age_sd"] < 1e-3
    assert metrics["not_learned"] is True
    assert sum("has not learned" in r.getMessage() for r in caplog.records) == 1
