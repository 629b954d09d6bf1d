"""The LightningModule: one network, one loss, Adam + reduce-on-plateau, as in the paper."""

from __future__ import annotations

from functools import partial

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanAbsoluteError

from bone_age.evaluation.metrics import age_metrics
from bone_age.losses import AgeLoss


class BoneAgeModule(pl.LightningModule):
    """Trains ``net`` with ``loss``; test predictions are gathered over all ranks.

    Batches are dicts with ``image`` (N, V, 3, H, W), ``age`` (N,), ``sex`` (N,) and ``index``
    (N,) (the study's row in the data module), normalised by the data module already.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: AgeLoss,
        optimizer: partial,
        scheduler: partial | None = None,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.net, self.loss = net, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.monitor = monitor
        self.val_mae = MeanAbsoluteError()
        self.best_val: float = float("inf")
        self.best_epoch: int = -1
        self._test_outputs: list[dict[str, torch.Tensor]] = []
        self.test_predictions: dict[str, torch.Tensor] = {}
        self.test_metrics: dict[str, float] = {}

    def forward(self, images: torch.Tensor, sex: torch.Tensor | None = None) -> torch.Tensor:
        # The data module normalises in float32; the weights may be float64 (64-true precision).
        return self.net(images.to(self.dtype), sex)

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self(batch["image"], batch["sex"])
        return outputs, self.loss(outputs, batch["age"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, loss = self._step(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(batch["age"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        outputs, loss = self._step(batch)
        pred, _ = self.loss.predict(outputs)
        self.val_mae(pred, batch["age"])
        n = len(batch["age"])
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/mae", self.val_mae, prog_bar=True, batch_size=n)

    def on_validation_epoch_end(self) -> None:
        value = self.trainer.callback_metrics.get(self.monitor)
        if not self.trainer.sanity_checking and value is not None and value < self.best_val:
            self.best_val, self.best_epoch = float(value), self.current_epoch

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["best_val"] = {"value": self.best_val, "epoch": self.best_epoch}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        best = checkpoint.get("best_val", {})
        self.best_val = best.get("value", float("inf"))
        self.best_epoch = best.get("epoch", -1)

    def predict_step(self, batch: dict, batch_idx: int = 0) -> dict[str, torch.Tensor]:
        """The one evaluation step: raw network outputs, ages and study indices.

        Testing decodes these; calibration needs them raw (logits) for the inner-validation and
        test splits.
        """
        return {"index": batch["index"], "age": batch["age"],
                "outputs": self(batch["image"], batch["sex"])}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        step = self.predict_step(batch, batch_idx)
        pred, sd = self.loss.predict(step["outputs"])
        self._test_outputs.append({
            "index": step["index"], "age": step["age"], "pred_age": pred.float(),
            "pred_sd": torch.full_like(pred, float("nan")) if sd is None else sd.float(),
        })

    def on_test_epoch_end(self) -> None:
        local = {k: torch.cat([o[k] for o in self._test_outputs]) for k in self._test_outputs[0]}
        self._test_outputs.clear()
        gathered = {k: self.all_gather(v).reshape(-1) for k, v in local.items()}
        # A distributed sampler pads with repeated samples: keep each study once.
        order = torch.argsort(gathered["index"])
        keep = torch.ones_like(order, dtype=torch.bool)
        sorted_index = gathered["index"][order]
        keep[1:] = sorted_index[1:] != sorted_index[:-1]
        self.test_predictions = {k: v[order][keep].cpu() for k, v in gathered.items()}
        self.test_metrics = age_metrics(self.test_predictions["pred_age"],
                                        self.test_predictions["age"])
        self.log_dict({f"test/{k}": v for k, v in self.test_metrics.items()}, rank_zero_only=True)

    @torch.no_grad()
    def predict_outputs(self, dataloader, transform=None) -> dict[str, torch.Tensor]:
        """``predict_step`` over ``dataloader`` on this device, in eval mode, concatenated (CPU).

        Args:
            dataloader: batches of a split (no augmentation).
            transform: the data module's batch hook (it normalises), applied on the device.
        """
        was_training = self.training
        self.eval()
        parts: dict[str, list[torch.Tensor]] = {}
        for i, batch in enumerate(dataloader):
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            if transform is not None:
                batch = transform(batch, 0)
            for key, value in self.predict_step(batch, i).items():
                parts.setdefault(key, []).append(
                    value.float().cpu() if value.is_floating_point() else value.cpu())
        self.train(was_training)
        return {k: torch.cat(v) for k, v in parts.items()}

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if not callable(self.scheduler_factory):  # scheduler=none gives an empty config
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}
