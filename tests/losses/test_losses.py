"""The three losses against hand-computed cases of the paper's equations."""

import math

import pytest
import torch

from bone_age.losses import (
    LOSSES,
    AgeOutOfRangeError,
    MeanVarianceLoss,
    MSELoss,
    SoftmaxLoss,
    loss_from_dict,
    mean_variance_loss,
    mse_loss,
    softmax_loss,
)


def test_mse_matches_equation_6():
    # ((42-40)^2 + (50-53)^2) / 2 = (4 + 9) / 2
    assert mse_loss(torch.tensor([[42.0], [50.0]]), torch.tensor([40.0, 53.0])).item() == 6.5


def test_softmax_loss_matches_equation_2():
    # Three classes 40, 41, 42; logits log(p) so that p is known exactly.
    p = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    loss = softmax_loss(p.log(), torch.tensor([41.0, 40.0]), min_age=40, max_age=42)
    assert loss.item() == pytest.approx(-(math.log(0.5) + math.log(0.6)) / 2, rel=1e-6)


def test_mean_variance_loss_matches_equations_1_to_4():
    p = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    ages = torch.tensor([41.0, 42.0])
    j = [40.0, 41.0, 42.0]
    means = [sum(a * b for a, b in zip(row, j, strict=False)) for row in p.tolist()]  # 41.1, 40.5
    variances = [sum(pk * (jk - m) ** 2 for pk, jk in zip(row, j, strict=False))
                 for row, m in zip(p.tolist(), means, strict=False)]
    ls = -(math.log(0.5) + math.log(0.1)) / 2
    lm = ((means[0] - 41) ** 2 + (means[1] - 42) ** 2) / (2 * 2)
    lv = sum(variances) / 2
    got = mean_variance_loss(p.log(), ages, 40, 42, lambda_mean=0.2, lambda_var=0.05)
    assert got.item() == pytest.approx(ls + 0.2 * lm + 0.05 * lv, rel=1e-5)


def test_ages_outside_class_range_are_an_error():
    logits = torch.zeros(2, 41)
    with pytest.raises(AgeOutOfRangeError, match="81"):
        softmax_loss(logits, torch.tensor([50.0, 81.0]))
    with pytest.raises(AgeOutOfRangeError, match="39"):
        mean_variance_loss(logits, torch.tensor([39.0, 50.0]))


def test_one_rounding_rule_for_classes_and_trainable_ages():
    """Class a covers [a - 0.5, a + 0.5): halves round up, never to even, and an age is trainable
    exactly when it falls in a class."""
    from bone_age.data.labels import trainable_age
    from bone_age.losses import age_to_class

    ages = torch.tensor([39.5, 40.49, 40.5, 41.5, 42.5, 79.5, 80.49], dtype=torch.float64)
    assert age_to_class(ages, 40, 80).tolist() == [0, 0, 1, 2, 3, 40, 40]
    for age in (*ages.tolist(), 39.49, 80.5):
        in_class = 40 - 0.5 <= age < 80 + 0.5
        assert trainable_age(age, (40, 80)) == in_class, age
        if not in_class:
            with pytest.raises(AgeOutOfRangeError):
                age_to_class(torch.tensor([age]), 40, 80)


def test_prediction_is_expected_value_and_sd_of_distribution():
    loss = MeanVarianceLoss(min_age=40, max_age=42)
    p = torch.tensor([[0.25, 0.5, 0.25]])
    pred, sd = loss.predict(p.log())
    assert pred.item() == pytest.approx(41.0)
    assert sd.item() == pytest.approx(math.sqrt(0.5))
    # The regression unit is read as centre + half-range * output: 60 + 20 * 0.25 = 65 years.
    pred, sd = MSELoss().predict(torch.tensor([[0.25]]))
    assert pred.item() == 65.0 and sd is None
    assert MSELoss()(torch.tensor([[0.25]]), torch.tensor([63.0])).item() == 4.0


def test_output_sizes_and_names():
    assert MSELoss().num_outputs == 1 and not MSELoss().predicts_distribution
    assert SoftmaxLoss().num_outputs == 41 and SoftmaxLoss().predicts_distribution
    assert MeanVarianceLoss(min_age=50, max_age=60).num_outputs == 11
    with pytest.raises(ValueError, match="max_age"):
        SoftmaxLoss(min_age=60, max_age=60)


@pytest.mark.parametrize("loss", [MSELoss(), SoftmaxLoss(min_age=45),
                                  MeanVarianceLoss(lambda_mean=0.3, lambda_var=0.1)])
def test_record_round_trip(loss):
    assert loss_from_dict(loss.to_dict()) == loss
    assert type(loss_from_dict(loss.to_dict())) is type(loss)


def test_record_errors_and_version_1():
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        loss_from_dict({"name": "huber"})
    with pytest.raises(ValueError, match="no parameter lambda_var"):
        loss_from_dict({"name": "mse", "lambda_var": 0.05})
    # version-1 records stored the mean-variance weights for every loss
    old = {"name": "mse", "min_age": 40, "max_age": 80, "lambda_mean": 0.2, "lambda_var": 0.05}
    assert loss_from_dict(old, legacy=True) == MSELoss()
    with pytest.raises(ValueError, match="no parameter beta"):
        loss_from_dict({**old, "beta": 1}, legacy=True)


# -- exact decoding at any precision (bf16-mixed must not round the predicted ages) ----------

@pytest.mark.parametrize("name", ["mse", "softmax", "mv"])
def test_decoding_under_bf16_autocast_equals_float32(name):
    loss = LOSSES[name]()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(256, loss.num_outputs, generator=gen) * 3
    ages = torch.randint(40, 81, (256,), generator=gen).float()
    ref_age, ref_sd = loss.predict(logits)
    ref_loss = loss(logits, ages)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # what the network hands over under autocast: its outputs may be bf16 as well
        for outputs in (logits, logits.to(torch.bfloat16).float()):
            age, sd = loss.predict(outputs)
            assert age.dtype == torch.float32
            if outputs is logits:
                assert torch.allclose(age, ref_age, atol=1e-3, rtol=0)
                assert torch.allclose(loss(outputs, ages), ref_loss, atol=1e-4, rtol=1e-5)
                if sd is not None:
                    assert torch.allclose(sd, ref_sd, atol=1e-3, rtol=0)
        # inputs computed in bf16 right before decoding: still decoded in float32
        bf = logits.to(torch.bfloat16)
        age_bf, _ = loss.predict(bf)
        assert age_bf.dtype == torch.float32
        assert torch.allclose(age_bf, loss.predict(bf.float())[0], atol=1e-3, rtol=0)


def test_bf16_decode_of_distributions_is_not_on_a_bf16_grid():
    # The seen defect: every pred_age of a bf16 run was 60.25 or 60.5 (bf16's grid near 60).
    loss = MeanVarianceLoss()
    logits = torch.randn(64, loss.num_outputs, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        age, _ = loss.predict(logits)
    assert len(torch.unique(age)) == 64
    assert ((age * 4) - (age * 4).round()).abs().max() > 0.01


@pytest.mark.parametrize("name", ["mse", "softmax", "mv"])
def test_losses_and_decoding_in_float64(name):
    # trainer.precision=64-true: outputs, weights and labels in float64
    loss = LOSSES[name]()
    logits = torch.randn(8, loss.num_outputs, dtype=torch.float64, requires_grad=True)
    ages = torch.linspace(41, 79, 8, dtype=torch.float64)
    value = loss(logits, ages)
    value.backward()
    assert value.dtype == torch.float64 and logits.grad is not None
    age, _ = loss.predict(logits)
    assert age.dtype == torch.float64


def test_network_head_runs_in_float32_under_autocast():
    from bone_age.models import BoneAgeNet

    net = BoneAgeNet("test_resnet", views=2, num_outputs=41).eval()
    x = torch.randn(2, 2, 3, 32, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.dtype == torch.float32
