"""The paper's real backbones, built at 224 x 224 and trained for one optimiser step."""

import pytest
import torch

from bone_age.losses import MeanVarianceLoss
from bone_age.models import BoneAgeNet


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "views"), [
    ("vgg16", 2), ("vgg16", 1), ("resnet50", 1), ("inception_v3", 1)])
def test_real_backbone_steps_at_224(backbone, views):
    torch.manual_seed(0)
    loss_fn = MeanVarianceLoss()
    net = BoneAgeNet(backbone, views=views, num_outputs=loss_fn.num_outputs)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    images = torch.randn(2, views, 3, 224, 224)
    ages = torch.tensor([45.0, 72.0])
    head_before = net.head.weight.detach().clone()
    first_conv = next(p for p in net.trunks[0].parameters() if p.dim() == 4)
    conv_before = first_conv.detach().clone()
    loss = loss_fn(net(images), ages)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert not torch.equal(net.head.weight, head_before)
    assert not torch.equal(first_conv, conv_before)  # gradients reach the first convolution
