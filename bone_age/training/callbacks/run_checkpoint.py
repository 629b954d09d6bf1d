"""Lightning's ModelCheckpoint, confined to its own folder, naming epochs as the log counts them.

A resumed run restores the callback's state from ``last.ckpt``; Lightning then tests, overwrites
and deletes the files that state names (``best_model_path`` even when the folder has changed).
Here every such path becomes the file of the same name in this run's folder, or the resume is
refused (checked before Lightning starts too: ``bone_age.training.resume``).

``{epoch}`` in a file name is the epoch's number in the run's log (``epoch 12/20`` is saved as
``epoch012.ckpt``), not Lightning's 0-based index, so the log, ``history.csv``,
``metrics.json``'s ``best_epoch``, the learning curves and the file names all count alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor

from bone_age.training.resume import confine_checkpoint_state


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose restored paths all lie in its ``dirpath`` and whose file names
    count epochs from 1."""

    @property
    def state_key(self) -> str:
        # Lightning's own key, so that last.ckpt files written before this class still resume.
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(confine_checkpoint_state(state_dict, Path(self.dirpath)))

    def format_checkpoint_name(self, metrics: dict[str, Tensor], filename: str | None = None,
                               ver: int | None = None, prefix: str | None = None) -> str:
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)
