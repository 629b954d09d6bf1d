"""The LightningModule: one network, one loss, Adam + reduce-on-plateau, as in the paper."""

from __future__ import annotations

import copy
from functools import partial

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanAbsoluteError

from bone_age.evaluation.fold_outputs import SplitOutputs
from bone_age.evaluation.metrics import age_metrics
from bone_age.losses import AgeLoss
from bone_age.training.precision import AGE_TOLERANCE_Y


class BoneAgeModule(pl.LightningModule):
    """Trains ``net`` with ``loss``; the evaluation pass is gathered over all ranks.

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
        self._test_outputs: dict[int, list[dict[str, torch.Tensor]]] = {}
        # The evaluation pass (trainer.test over the data module's evaluation splits): split
        # name -> its outputs and decoded ages; what every result of the run is computed from.
        self.evaluation: dict[str, SplitOutputs] = {}
        self.test_metrics: dict[str, float] = {}
        # The evaluation pass in reduced precision, checked against float32 on the first test
        # batch: studies compared, studies off by more than AGE_TOLERANCE_Y, the largest gap.
        self.precision_check: dict[str, float] = {}
        self._precision_gaps: list[torch.Tensor] = []

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
        """The one evaluation step: raw network outputs and study indices (the loss decodes
        them once, after the pass: calibration needs the raw logits)."""
        return {"index": batch["index"], "outputs": self(batch["image"], batch["sex"])}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        step = self.predict_step(batch, batch_idx)
        outputs = step["outputs"].detach()
        # bf16/fp16 widen to float32 exactly; float64 (64-true) stays as computed.
        if outputs.dtype != torch.float64:
            outputs = outputs.float()
        self._test_outputs.setdefault(dataloader_idx, []).append(
            {"index": step["index"], "outputs": outputs})
        splits = getattr(self.trainer.datamodule, "evaluation_splits", ("test",))
        if batch_idx == 0 and splits[dataloader_idx] == "test" and self._reduced_precision():
            self._precision_gaps.append(self._float32_gap(batch, outputs))

    def _reduced_precision(self) -> bool:
        return not str(self.trainer.precision).startswith(("32", "64"))

    @torch.no_grad()
    def _float32_gap(self, batch: dict, outputs: torch.Tensor,
                     studies: int = 16) -> torch.Tensor:
        """|age decoded from ``outputs`` - age float32 decodes| for the batch's first studies:
        the same weights in float32 with autocast off, after the reduced-precision forward
        (a first forward after loading weights was where CPU bf16 went wrong)."""
        net = self.net
        if any(p.dtype != torch.float32 for p in net.parameters()):  # bf16-true, 16-true
            net = copy.deepcopy(net).float()
        n = min(studies, len(outputs))
        sex = batch["sex"][:n] if batch.get("sex") is not None else None
        with torch.autocast(device_type=outputs.device.type, enabled=False):
            # forward(), not __call__: eager even where speed.compile compiled the network (a
            # float32 call of the compiled one would compile it again).
            reference = net.forward(batch["image"][:n].float(), sex).float()
        gap = (self.loss.predict(outputs[:n])[0] - self.loss.predict(reference)[0]).abs()
        return torch.nan_to_num(gap.float(), nan=float("inf"))

    def on_test_epoch_end(self) -> None:
        """Gather each evaluated split over the ranks, decode it once, log the test metrics."""
        dm = self.trainer.datamodule
        splits = getattr(dm, "evaluation_splits", ("test",))
        self.evaluation = {}
        for idx, parts in sorted(self._test_outputs.items()):
            index, outputs = self._gathered(parts)
            ages, subject_ids, sexes = dm.facts.labels_of(index)
            self.evaluation[splits[idx]] = SplitOutputs.decode(self.loss, outputs, ages,
                                                               subject_ids, sexes)
        self._test_outputs.clear()
        self._reduce_precision_gaps()
        if "test" in self.evaluation:
            test = self.evaluation["test"]
            self.test_metrics = age_metrics(test.pred_age, test.age)
            self.log_dict({f"test/{k}": v for k, v in self.test_metrics.items()},
                          rank_zero_only=True)

    def _reduce_precision_gaps(self) -> None:
        """Every rank's float32 comparison, summed (the ranks then decide alike)."""
        if not self._reduced_precision():
            self.precision_check = {}
            return
        gaps = torch.cat(self._precision_gaps) if self._precision_gaps else torch.zeros(0)
        self._precision_gaps.clear()
        local = torch.tensor([len(gaps), float((gaps > AGE_TOLERANCE_Y).sum()),
                              float(gaps.max()) if len(gaps) else 0.0], device=self.device)
        total = self.all_gather(local).reshape(-1, 3)
        self.precision_check = {"studies": int(total[:, 0].sum()),
                                "off": int(total[:, 1].sum()),
                                "max_gap_y": float(total[:, 2].max())}

    def _gathered(self, parts: list[dict[str, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
        """Study indices and outputs of every rank, each study once, by index (CPU numpy)."""
        index = torch.cat([p["index"] for p in parts])
        outputs = torch.cat([p["outputs"] for p in parts])
        index, outputs = self.all_gather(index).reshape(-1), self.all_gather(outputs)
        outputs = outputs.reshape(-1, *outputs.shape[-1:])
        # A distributed sampler pads with repeated samples: keep each study once.
        order = torch.argsort(index)
        keep = torch.ones_like(order, dtype=torch.bool)
        keep[1:] = index[order][1:] != index[order][:-1]
        order = order[keep]
        return index[order].cpu().numpy(), outputs[order].cpu().numpy()

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if not callable(self.scheduler_factory):  # scheduler=none gives an empty config
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}
