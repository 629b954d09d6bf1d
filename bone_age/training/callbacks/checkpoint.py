"""Lightning's ModelCheckpoint, confined to its own folder.

A resumed run restores the callback's state from ``last.ckpt``; Lightning then tests, overwrites
and deletes the files that state names (``best_model_path`` even when the folder has changed).
Here every such path becomes the file of the same name in this run's folder, or the resume is
refused (checked before Lightning starts too: ``bone_age.training.resume``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint

from bone_age.training.resume import confine_checkpoint_state


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose restored paths all lie in its ``dirpath``."""

    @property
    def state_key(self) -> str:
        # Lightning's own key, so that last.ckpt files written before this class still resume.
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(confine_checkpoint_state(state_dict, Path(self.dirpath)))
