"""Networks: timm trunks + the paper's fully connected heads. Tensors in, tensors out."""

from bone_age.models.bone_age_net import BoneAgeNet, count_parameters
from bone_age.models.trunk import Trunk, create_trunk

__all__ = ["BoneAgeNet", "Trunk", "count_parameters", "create_trunk"]
