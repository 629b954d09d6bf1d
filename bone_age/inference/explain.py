"""``python -m bone_age.explain CHECKPOINT INPUT [--out DIR]``: Grad-CAM heat maps of a study.

For a person to look at, not a measurement: where in each view a convolution stage's
activations push the predicted age (the distribution's mean, or the MSE output) up (red) or
down (blue). Grad-CAM is captum's ``LayerGradCam`` on the last stage of each view's trunk
(``--stage 2``: the one before, finer); maps are signed (no ReLU), scaled by one common
maximum over both views so their strengths compare, and upsampled to the model input. The
checkpoint and the input pipeline are inference's (``load_checkpoint``, ``RunMetadata.counts``
and ``.normalize``), so the maps are over exactly the image the model sees (resized, posterior
mirrored if training mirrored it).

INPUT is one DICOM file (both views as frames, or one view with ``--view``) or a manifest
``.csv`` (``--subject ID``, default its first study). Writes ``<name>_gradcam.png`` (both views:
scan and overlay side by side, with the prediction) and ``<name>_<view>.png`` (the overlay at
the model input size x ``--scale``). ``<name>`` is the manifest pseudonym, or for a DICOM file
the subject's pseudonym as ``index`` and ``predict`` give it (``BA-...``, with ``--key-file``;
``study_<digest of the file>`` for a file without a Patient ID): nothing from the DICOM
header's identity fields or the file's name is written.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from types import ModuleType

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bone_age.data.pseudonym import DEFAULT_KEY_FILE  # noqa: E402
from bone_age.inference.checkpoint import load_checkpoint  # noqa: E402
from bone_age.inference.run_metadata import RunMetadata  # noqa: E402
from bone_age.models import BoneAgeNet  # noqa: E402
from bone_age.utils.arguments import ArgumentParser
from bone_age.utils.errors import EXIT_OK, BoneAgeError, command  # noqa: E402
from bone_age.utils.extras import require  # noqa: E402
from bone_age.utils.outputs import (  # noqa: E402
    check_output_dir,
    check_output_file,
    check_outside_scan_folders,
    remove_stale_temps,
    write_all_atomic,
)


class ExplainError(BoneAgeError, ValueError):
    """A study or model that Grad-CAM cannot explain (the message says why)."""


def captum_attr() -> ModuleType:
    """captum.attr, of the optional ``explain`` extra."""
    return require("captum.attr", "python -m bone_age.explain (Grad-CAM)")


def last_stage(trunk: nn.Module, example: torch.Tensor, stage: int = 1) -> nn.Module:
    """The ``stage``-th last top-level child of a timm trunk with a 4-D output (Grad-CAM layer).

    Found by probing, so it works for any timm architecture (resnet ``layer4``, VGG's last
    conv block, ...).
    """
    seen: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: seen.append(mod)
                                     if torch.is_tensor(out) and out.dim() == 4 else None)
             for m in trunk.body.children()]
    with torch.no_grad():
        trunk(example)
    for h in hooks:
        h.remove()
    if len(seen) < stage:
        raise ExplainError(f"--stage {stage}: the trunk has only {len(seen)} convolutional "
                           "stages")
    return seen[-stage]


class AgeOutput(nn.Module):
    """The network read as one number per study: the predicted age (for Grad-CAM's target)."""

    def __init__(self, net: BoneAgeNet, spec: RunMetadata, sex: torch.Tensor | None) -> None:
        super().__init__()
        self.net, self.loss, self.sex = net, spec.loss, sex

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.loss.predict(self.net(images, self.sex))[0].unsqueeze(1)


def gradcam(net: BoneAgeNet, spec: RunMetadata, images: torch.Tensor,
            sex: torch.Tensor | None, stage: int = 1) -> np.ndarray:
    """(V, H, W) signed Grad-CAM maps in [-1, 1] for images (1, V, 3, H, W), at H x W."""
    if len(net.trunks) != net.views:
        raise ExplainError("Grad-CAM per view needs one trunk per view; this model shares one "
                           "(model.share_weights=true)")
    model = AgeOutput(net, spec, sex)
    maps = []
    for v, trunk in enumerate(net.trunks):
        layer = last_stage(trunk, images[:, v], stage)
        attr = captum_attr().LayerGradCam(model, layer).attribute(images, target=0)
        up = captum_attr().LayerAttribution.interpolate(attr, tuple(images.shape[-2:]), "bilinear")
        maps.append(up[0, 0].detach().numpy())
    stacked = np.stack(maps)
    top = float(np.abs(stacked).max())
    return stacked / top if top > 0 else stacked


def overlay(counts: np.ndarray, heat: np.ndarray, scale: int = 4) -> np.ndarray:
    """RGB uint8 (H*scale, W*scale, 3): grey scan (dark = high uptake), map in red/blue."""
    scan = counts / max(float(np.percentile(counts, 99.5)), 1e-6)
    grey = 1.0 - np.clip(scan, 0, 1)  # scintigraphy convention: uptake is dark
    rgb = np.repeat(grey[..., None], 3, axis=2)
    colour = plt.get_cmap("bwr")(0.5 + 0.5 * heat)[..., :3]
    alpha = 0.65 * np.abs(heat)[..., None]
    out = (1 - alpha) * rgb + alpha * colour
    out = np.kron(out, np.ones((scale, scale, 1)))  # nearest-neighbour enlargement
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def output_files(out: Path, name: str, views: tuple[str, ...]) -> list[Path]:
    """The files ``explain`` writes: one overlay per view, then the figure."""
    if Path(name).name != name or name in (".", ".."):  # a subject_id is no path
        raise ExplainError(f"subject_id {name!r} cannot name a file in {out}")
    return [out / f"{name}_{view}.png" for view in views] + [out / f"{name}_gradcam.png"]


def explain(checkpoint: Path, files: dict[str, Path], sex: str | None, out: Path,
            name: str = "study", scale: int = 4, stage: int = 1) -> list[Path]:
    """Write the figure and one overlay per view (each whole or not at all); returns the paths."""
    # The scans' folder is an input folder, also for one file given alone (issue 37).
    check_outside_scan_folders(out, "Grad-CAM images", files.values())
    net, spec = load_checkpoint(checkpoint)
    paths = output_files(out, name, spec.views)
    for path in paths:
        check_output_file(path, "Grad-CAM image", [checkpoint, *files.values()])
    counts = spec.counts(files)  # (V, H, W)
    images = spec.normalize()(torch.from_numpy(counts[None].astype(np.float32)))
    sex_t = None
    if spec.use_sex:
        if sex not in ("F", "M"):
            raise ExplainError("the model uses sex as an input; the study has none: give "
                               "--sex F or M")
        sex_t = torch.tensor([float(sex == "M")])
    with torch.no_grad():
        age, sd = spec.loss.predict(net(images, sex_t))
    heat = gradcam(net, spec, images, sex_t, stage)
    label = f"predicted age {age.item():.1f} y" + ("" if sd is None else f" (SD {sd.item():.1f})")
    # All or none: an interrupted run never leaves 2 of the 3 images.
    writes = [(path, lambda tmp, v=v: plt.imsave(tmp, overlay(counts[v], heat[v], scale)))
              for v, path in enumerate(paths[:-1])]
    writes.append((paths[-1], lambda tmp: _figure(counts, heat, spec, label, tmp)))
    remove_stale_temps(out)
    return write_all_atomic(writes)


def _figure(
    counts: np.ndarray, heat: np.ndarray, spec: RunMetadata, label: str, path: Path
) -> Path:
    n = len(spec.views)
    fig, axes = plt.subplots(1, 2 * n, figsize=(2.0 * 2 * n, 4.6), squeeze=False)
    mirrored = spec.mirror_posterior
    for v, view in enumerate(spec.views):
        title = view + (" (mirrored)" if view == "posterior" and mirrored else "")
        axes[0, 2 * v].imshow(overlay(counts[v], np.zeros_like(heat[v]), 1), aspect="auto")
        axes[0, 2 * v].set_title(title, fontsize=9)
        axes[0, 2 * v + 1].imshow(overlay(counts[v], heat[v], 1), aspect="auto")
        axes[0, 2 * v + 1].set_title(f"{view}: Grad-CAM", fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"{label}\nGrad-CAM: red raises, blue lowers the predicted age", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _study(args: argparse.Namespace) -> tuple[dict[str, Path], str | None, str]:
    """Files of each view, sex, and the output name of the study INPUT names."""
    if args.input.suffix.lower() == ".csv":
        from bone_age.inference.predict import from_manifest

        items, refused = from_manifest(args.input)
        chosen = [i for i in items if args.subject in (None, i.subject_id)]
        why = [r.reason for r in refused if r.subject_id == args.subject]
        if not chosen:
            raise ExplainError(why[0] if why else f"{args.input}: no usable study "
                               f"{args.subject or ''} in the manifest")
        item = chosen[0]
        return item.files, args.sex or item.sex, item.subject_id
    from bone_age.data.pseudonym import SUBJECT_PREFIX
    from bone_age.inference.predict import from_file

    # The index's checks (modality, image, view, whole-body shape and counts) and its
    # pseudonym, as predict does: the images are named as index and predict name the subject
    # (a path naming the patient is shown as <the input file of BA-...> in errors).
    item, _ = from_file(args.input, args.view, args.key_file, args.out / "images")
    name = item.subject_id if item.subject_id.startswith(SUBJECT_PREFIX) else \
        _file_name(args.input)  # no Patient ID to derive a pseudonym from
    return item.files, args.sex or item.sex, name


def _file_name(path: Path) -> str:
    """``study_<digest of the file>``: a second input gets its own images (the same file the
    same ones), and the name says nothing of the patient, as the file's own name might."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"study_{digest.hexdigest()[:12]}"


def _at_least_1(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 32:
        raise argparse.ArgumentTypeError(f"must be in 1..32, got {value}")
    return value


@command("explain")
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bone_age.explain",
                                description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="a run's checkpoints/*.ckpt")
    p.add_argument("input", type=Path, help="a DICOM file or a manifest .csv")
    p.add_argument("--out", type=Path, default=Path("explain"))
    p.add_argument("--view", choices=["anterior", "posterior"],
                   help="the view of a single-frame file whose headers do not name it")
    p.add_argument("--subject", help="manifest subject_id to explain (default: the first)")
    p.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE,
                   help="pseudonym key for a DICOM file, as python -m bone_age.index uses: its "
                        "images are named after the subject's pseudonym (BA-...)")
    p.add_argument("--sex", choices=["F", "M"], help="for models using sex, if not in the input")
    p.add_argument("--scale", type=_at_least_1, default=4,
                   help="enlargement of the per-view overlays (1..32)")
    p.add_argument("--stage", type=_at_least_1, default=1,
                   help="trunk stage counted from the end (1: last, coarsest; 2: finer)")
    args = p.parse_args(argv)
    captum_attr()  # before any work: a missing extra is one line
    check_output_dir(args.out, "Grad-CAM images")
    if args.input.suffix.lower() != ".csv":  # before any work: one file's folder is an input's
        check_outside_scan_folders(args.out, "Grad-CAM images", [args.input])
    files, sex, name = _study(args)
    written = explain(args.checkpoint, files, sex, args.out, name, args.scale, args.stage)
    for path in written:
        print(path)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
