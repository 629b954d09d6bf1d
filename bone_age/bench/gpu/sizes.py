"""The sizes of one GPU check: the paper's (on a GPU) or tiny ones (``--dry-run`` on a CPU)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Table 1's models (config group ``model``) and the timm trunk each one uses.
TABLE1_MODELS = ("multi_vgg16", "vgg16", "resnet50", "inception")


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between a real GPU check and a dry run."""

    dry_run: bool
    device: str
    image_size: tuple[int, int]
    batch: int
    warmup_steps: int
    timed_steps: int
    subjects: int
    train_seconds: float       # the paper-scale run's training budget
    pack_seconds: float        # each packing measurement
    matmul_n: int              # square bf16 matmul that measures the peak rate
    backbone: str | None       # None: each model's own trunk; dry run: a tiny one
    compile_backend: str       # dry run: dynamo's tracing only, no minutes of code generation

    @property
    def modes(self) -> tuple[str, ...]:
        return ("fp32", "bf16", "bf16+cl")


def sizes_for(dry_run: bool) -> Sizes:
    if dry_run:
        return Sizes(True, "cpu", (32, 16), 4, 1, 2, 24, 60.0, 2.0, 256, "test_resnet",
                     "eager")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU: run on a GPU machine, or use --dry-run")
    return Sizes(False, "cuda", (224, 224), 64, 5, 20, 4474, 120.0, 20.0, 8192, None, "inductor")
