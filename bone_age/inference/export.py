"""``python -m bone_age.export CHECKPOINT --out model.onnx``: an ONNX model + its model card.

The graph takes the count images after ``Preprocess`` (input ``counts``, float32
(N, V, H, W); V, H, W as in the metadata) and, for models trained with sex as an input, ``sex``
(float32 (N,), 0 = F, 1 = M). ``CountNormalize`` (percentile scaling, 3 channels, ImageNet
statistics) is part of the graph. Outputs: ``age`` (N,) in years and ``sd`` (N,), the SD of the
predicted age distribution (NaN for an MSE model), and ``outputs`` (N, K), the network's raw
outputs (logits of a distribution loss), which evaluation needs for interval coverage. The
checkpoint's ``bone_age`` settings are
stored as JSON in the model's metadata_props (key ``bone_age``), so the file is self-contained.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from bone_age.inference.checkpoint import load_checkpoint
from bone_age.inference.model_card import card_path, write_model_card
from bone_age.inference.run_metadata import METADATA_KEY, RunMetadata
from bone_age.losses import AgeLoss
from bone_age.utils.arguments import ArgumentParser
from bone_age.utils.errors import EXIT_OK, command
from bone_age.utils.extras import require
from bone_age.utils.outputs import OutputError, check_output_file, write_atomic

OPSET = 18


class ExportedModel(nn.Module):
    """Normalisation + network + the loss's age read-out, as one graph."""

    def __init__(self, net: nn.Module, normalize: nn.Module, loss: AgeLoss) -> None:
        super().__init__()
        self.net, self.normalize, self.loss = net, normalize, loss

    def forward(
        self, counts: torch.Tensor, sex: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.net(self.normalize(counts), sex)
        age, sd = self.loss.predict(outputs)
        return age, torch.full_like(age, float("nan")) if sd is None else sd, outputs


def export(checkpoint: str | Path, out: str | Path) -> Path:
    """Write ``out`` (ONNX) from a checkpoint; returns its path."""
    return export_model(*load_checkpoint(checkpoint), out)


def export_model(net: nn.Module, spec: RunMetadata, out: str | Path) -> Path:
    """Write ``out`` (ONNX, whole or not at all) from a loaded network; returns its path."""
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")  # torch.onnx's exporter builds the graph with it
    model = ExportedModel(net, spec.normalize(), spec.loss).eval()
    h, w = spec.image_size
    counts = torch.rand(2, len(spec.views), h, w) * 100
    args: tuple = (counts,)
    names = ["counts"]
    batch = torch.export.Dim("batch", min=1)
    shapes: dict = {"counts": {0: batch}}
    if spec.use_sex:
        args, names = (counts, torch.tensor([0.0, 1.0])), ["counts", "sex"]
        shapes["sex"] = {0: batch}
    with torch.no_grad():
        program = torch.onnx.export(model, args, dynamo=True, input_names=names,
                                    output_names=["age", "sd", "outputs"], dynamic_shapes=shapes,
                                    opset_version=OPSET, verbose=False)
    proto = program.model_proto
    meta = onnx.StringStringEntryProto(key=METADATA_KEY, value=json.dumps(spec.to_dict()))
    proto.metadata_props.append(meta)
    return write_atomic(out, lambda tmp: onnx.save(proto, str(tmp)))


def run_metrics(checkpoint: Path) -> dict | None:
    """metrics.json of the run the checkpoint belongs to (RUN/checkpoints/x.ckpt), if any."""
    path = checkpoint.resolve().parent.parent / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        metrics = err
    if not isinstance(metrics, dict):
        print(f"bone-age export: warning: {path} is not a readable metrics file; the model card "
              "has no performance figures", file=sys.stderr)
        return None
    return metrics


@command("export")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bone_age.export",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a run's checkpoints/*.ckpt")
    parser.add_argument("--out", type=Path, default=Path("model.onnx"), help="ONNX file")
    args = parser.parse_args(argv)
    check_output_file(args.out, "ONNX model", [args.checkpoint])
    check_output_file(card_path(args.out), "model card", [args.checkpoint])
    if card_path(args.out) == args.out:
        raise OutputError(f"{args.out}: the ONNX model needs another name than its model card "
                          "(.md); give --out NAME.onnx")
    net, spec = load_checkpoint(args.checkpoint)
    metrics = run_metrics(args.checkpoint)
    out = export_model(net, spec, args.out)
    card = write_model_card(spec, metrics, out)
    print(f"model: {out}\nmodel card: {card}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
