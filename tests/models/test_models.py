"""Network shapes and the parameter counts the paper's architecture implies."""

import pytest
import torch

from bone_age.models import BoneAgeNet, count_parameters
from bone_age.models.trunk import PretrainedWeightsError, create_trunk


def test_vgg16_trunk_is_the_13_conv_layers():
    assert count_parameters(create_trunk("vgg16")) == 14_714_688


@pytest.mark.parametrize(("views", "outputs", "expected"), [
    (2, 41, 29_918_377),  # multi_vgg16 + mv
    (1, 41, 14_936_809),  # vgg16 + mv
])
def test_paper_parameter_counts(views, outputs, expected):
    assert count_parameters(BoneAgeNet("vgg16", views=views, num_outputs=outputs)) == expected


def test_shared_weights_halve_the_trunks():
    shared = BoneAgeNet("resnet10t", views=2, share_weights=True)
    separate = BoneAgeNet("resnet10t", views=2)
    trunk = count_parameters(create_trunk("resnet10t"))
    assert count_parameters(separate) - count_parameters(shared) > trunk


def test_sex_input_is_used():
    torch.manual_seed(0)
    net = BoneAgeNet("resnet10t", views=2, num_outputs=41, use_sex=True).eval()
    assert count_parameters(net) == count_parameters(
        BoneAgeNet("resnet10t", views=2, num_outputs=41)) + 160
    x = torch.rand(2, 2, 3, 32, 32)
    out_f = net(x, torch.tensor([0, 0]))
    out_m = net(x, torch.tensor([1, 1]))
    assert out_f.shape == (2, 41)
    assert not torch.allclose(out_f, out_m)


def test_unknown_backbone_and_missing_weights_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="not a timm architecture"):
        create_trunk("vgg17")
    with pytest.raises(PretrainedWeightsError, match="model.weights"):
        create_trunk("resnet10t", weights=str(tmp_path / "none.safetensors"))


def test_local_weights_file_is_loaded(tmp_path):
    import timm
    from safetensors.torch import save_file

    full = timm.create_model("resnet10t")
    save_file(full.state_dict(), tmp_path / "w.safetensors")
    trunk = create_trunk("resnet10t", weights=str(tmp_path / "w.safetensors"))
    assert torch.equal(trunk.body.conv1[0].weight, full.conv1[0].weight)
