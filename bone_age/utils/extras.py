"""Optional dependencies: imported where a command needs them, with a one-line install hint.

Training and prediction from checkpoints need none of these; each belongs to one extra of the
package (``pip install 'bone-age[onnx]'``), listed here once.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from bone_age.utils.errors import BoneAgeError

# module -> the extra of pyproject.toml that installs it
EXTRAS = {
    "wandb": "wandb",
    "tensorboard": "tensorboard",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
    "captum": "explain",
}


class MissingExtraError(BoneAgeError):
    """An optional dependency is not installed (the message says which extra installs it)."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise MissingExtraError naming the extra to install.

    Args:
        module: the optional package's import name (a key of ``EXTRAS``).
        purpose: what needs it, for the message (``ONNX export``, ``logger=wandb``...).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[module.split(".")[0]]
        raise MissingExtraError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed: "
            f"pip install 'bone-age[{extra}]'") from None
