"""The paper's single- and multi-input networks (Fig. 1).

Per input branch: trunk -> GAP -> FC 320 -> ReLU -> Dropout -> FC 160 -> ReLU -> Dropout.
Multi-input: the branches' 160-d outputs are concatenated (320) -> FC 160 -> ReLU -> Dropout.
Then the output layer: K logits (softmax / mean-variance losses) or one unit (MSE).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bone_age.models.trunk import create_trunk


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _mlp(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class BoneAgeNet(nn.Module):
    """``views`` input branches (1 = anterior only, 2 = anterior + posterior) -> age outputs.

    ``forward`` takes (N, V, 3, H, W) and returns (N, num_outputs). ``use_sex`` appends the
    patient's sex (0 = F, 1 = M) to the fused features before the last hidden layer.
    """

    def __init__(
        self,
        backbone: str = "vgg16",
        views: int = 2,
        num_outputs: int = 41,
        branch_sizes: Sequence[int] = (320, 160),
        fusion_size: int = 160,
        dropout: float = 0.2,
        share_weights: bool = False,
        pretrained: bool = False,
        weights: str | None = None,
        use_sex: bool = False,
    ) -> None:
        super().__init__()
        if views not in (1, 2):
            raise ValueError(f"model.views must be 1 or 2, got {views}")
        self.views = views
        self.use_sex = use_sex
        n_trunks = 1 if share_weights else views
        self.trunks = nn.ModuleList(
            create_trunk(backbone, pretrained, weights) for _ in range(n_trunks)
        )
        width = self.trunks[0].out_features
        self.branches = nn.ModuleList(
            _mlp([width, *branch_sizes], dropout) for _ in range(n_trunks)
        )
        fused = branch_sizes[-1] * views + int(use_sex)
        # Single input: the branch output feeds the output layer directly (paper's baselines).
        self.fusion = _mlp([fused, fusion_size], dropout) if views > 1 or use_sex else None
        last = fusion_size if self.fusion is not None else branch_sizes[-1]
        self.head = nn.Linear(last, num_outputs)

    def forward(self, images: torch.Tensor, sex: torch.Tensor | None = None) -> torch.Tensor:
        feats = []
        for v in range(self.views):
            i = min(v, len(self.trunks) - 1)
            feats.append(self.branches[i](self.trunks[i](images[:, v])))
        x = torch.cat(feats, dim=1)
        if self.use_sex:
            if sex is None:
                raise ValueError("this model uses sex as an input; pass sex (0 = F, 1 = M)")
            x = torch.cat([x, sex.float().reshape(-1, 1)], dim=1)
        if self.fusion is not None:
            x = self.fusion(x)
        # The output layer runs in its weights' precision, autocast off: bf16 logits (8-bit
        # mantissa) would round the regression unit to ~0.1 y and blur the softmax.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(x.to(self.head.weight.dtype))
