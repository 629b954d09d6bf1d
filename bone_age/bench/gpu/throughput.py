"""Training throughput and model FLOP utilisation (MFU) of Table 1's models on one device.

A plain PyTorch step (forward, loss, backward, Adam) on batches already on the device, exactly
the network, loss and autocast that a run uses: it measures the model, not the input pipeline
(stage c measures that). FLOPs of one step are counted with ``torch.utils.flop_counter``; MFU
is the achieved model FLOP rate over the bf16 matmul rate measured in the same check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from bone_age.bench.gpu.sizes import Sizes
from bone_age.losses import LOSSES
from bone_age.utils.configs import CONF_DIR


def build_net(model: str, num_outputs: int, backbone: str | None = None) -> torch.nn.Module:
    """The network of Table 1 model ``model`` as the ``model`` config group composes it."""
    from hydra import compose, initialize_config_dir

    overrides = [f"model={model}"] + ([f"model.backbone={backbone}"] if backbone else [])
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        node = compose("config", overrides=overrides).model
    return instantiate(node, num_outputs=num_outputs)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, n: int, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n bf16 matrix product on ``device`` (mean of ``repeats``)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


class TrainStep:
    """One training step of ``model`` under ``mode`` (fp32 | bf16 | bf16+cl | bf16+cl+compile)."""

    def __init__(self, model: str, mode: str, sizes: Sizes, loss: str = "mv", seed: int = 0):
        torch.manual_seed(seed)
        self.loss = LOSSES[loss]()
        self.device, self.mode = sizes.device, mode
        self.net = build_net(model, self.loss.num_outputs, sizes.backbone).to(self.device)
        if "+cl" in mode:
            self.net.to(memory_format=torch.channels_last)
        self.compiled = mode.endswith("+compile")
        if self.compiled:
            self.net.compile(backend=sizes.compile_backend)  # in place, as speed.compile does
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        views = self.net.views
        h, w = sizes.image_size
        g = torch.Generator().manual_seed(seed)
        self.batch = sizes.batch
        self.images = torch.randn(sizes.batch, views, 3, h, w, generator=g).to(self.device)
        self.ages = torch.randint(40, 81, (sizes.batch,), generator=g).float().to(self.device)
        self.views = views

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.mode == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=torch.bfloat16)

    def forward_backward(self) -> torch.Tensor:
        with self._autocast():
            loss = self.loss(self.net(self.images), self.ages)
        loss.backward()
        return loss

    def __call__(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.forward_backward()
        self.opt.step()

    def flops(self) -> int:
        """Model FLOPs of one step (forward + backward; the optimizer's are left out)."""
        counter = FlopCounterMode(display=False)
        with counter:
            self.forward_backward()
        self.opt.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def time_steps(step: Callable[[], None], device: str, warmup: int, steps: int) -> float:
    """Seconds per step after ``warmup`` steps (the device synchronised around the timing)."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def measure(model: str, mode: str, sizes: Sizes) -> dict[str, Any]:
    """Samples/s, images/s, step time and MFU of one model under one mode."""
    step = TrainStep(model, mode, sizes)
    first = time.perf_counter()
    step()  # the first step: cudnn autotuning, and compilation under +compile
    sync(sizes.device)
    first_s = time.perf_counter() - first
    flops = step.flops() if not step.compiled else None
    seconds = time_steps(step, sizes.device, sizes.warmup_steps, sizes.timed_steps)
    out = {"model": model, "mode": mode, "batch": sizes.batch, "views": step.views,
           "step_s": seconds, "samples_per_s": sizes.batch / seconds,
           "images_per_s": sizes.batch * step.views / seconds, "first_step_s": first_s,
           "flops_per_step": flops}
    del step
    if sizes.device == "cuda":
        torch.cuda.empty_cache()
    return out


def with_mfu(rows: list[dict[str, Any]], peak: float) -> list[dict[str, Any]]:
    """MFU of each row; a compiled model takes the FLOPs counted for the same model eagerly."""
    flops = {r["model"]: r["flops_per_step"] for r in rows if r["flops_per_step"]}
    for r in rows:
        f = r["flops_per_step"] or flops.get(r["model"])
        r["flops"], r["mfu"] = f or 0, None if not f else f / r["step_s"] / peak
    return rows


# -- packing: several processes training on one GPU at once (stage f) -----------------------

def worker(model: str, mode: str, sizes: Sizes, ready: Path, go: Path, out: Path) -> None:
    """Train until the window that ``go`` names has passed; write the samples done inside it."""
    step = TrainStep(model, mode, sizes)
    time_steps(step, sizes.device, sizes.warmup_steps + 1, 1)
    ready.write_text("ready")
    deadline = time.time() + 300
    while not go.exists():
        if time.time() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.05)
    window = json.loads(go.read_text())
    while time.time() < window["start"]:
        step()
    sync(sizes.device)
    done, t0 = 0, time.time()
    while time.time() < window["end"]:
        step()
        sync(sizes.device)
        done += sizes.batch
    out.write_text(json.dumps({"samples": done, "seconds": time.time() - t0,
                               "late": t0 > window["start"] + 1.0}))


def main(argv: list[str] | None = None) -> int:
    from bone_age.bench.gpu.sizes import sizes_for

    p = argparse.ArgumentParser(prog="python -m bone_age.bench.gpu.throughput")
    p.add_argument("--worker", required=True, help="Table 1 model to train")
    p.add_argument("--mode", default="bf16+cl")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--dir", type=Path, required=True, help="folder of the ready/go/out files")
    p.add_argument("--name", required=True)
    args = p.parse_args(argv)
    sizes = sizes_for(args.dry_run)
    torch.backends.cudnn.benchmark = True
    worker(args.worker, args.mode, sizes, args.dir / f"{args.name}.ready", args.dir / "go.json",
           args.dir / f"{args.name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
