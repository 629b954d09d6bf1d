"""Lightning callback: ModelCheckpoint whose file names count epochs from 1, as the log does."""

from __future__ import annotations

from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor


class EpochCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``; ``{epoch}`` in a file name is the epoch's number in the
    run's log (``epoch 12/20`` is saved as ``epoch012.ckpt``), not Lightning's 0-based index,
    so the log, ``history.csv``, ``metrics.json``'s ``best_epoch``, the learning curves and the
    file names all count alike."""

    def format_checkpoint_name(self, metrics: dict[str, Tensor], filename: str | None = None,
                               ver: int | None = None, prefix: str | None = None) -> str:
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)
