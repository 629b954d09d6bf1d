"""``trainer.precision`` adapted to the hardware, so that a preset asking for bf16 is fast
everywhere."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere it is emulated
    and bf16-mixed is slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def supported_precision(trainer_cfg: DictConfig | dict) -> str:
    """``trainer.precision``, adapted to the hardware so that a preset asking for bf16 is fast
    everywhere: fp16 on a CUDA GPU without bf16 (before Ampere), float32 on a CPU without
    native bf16."""
    precision = str(trainer_cfg.get("precision", "32-true"))
    if not precision.startswith("bf16"):
        return precision
    accelerator = trainer_cfg.get("accelerator")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto"
                                                and torch.cuda.is_available())
    if on_gpu and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        fallback = precision.replace("bf16", "16")
        log.warning("this GPU has no bf16: trainer.precision %s -> %s", precision, fallback)
        return fallback
    if not on_gpu and not cpu_has_bf16():
        log.warning("this CPU has no native bf16: trainer.precision %s -> 32-true", precision)
        return "32-true"
    return precision
