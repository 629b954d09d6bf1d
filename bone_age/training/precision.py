"""``trainer.precision`` adapted to the hardware, so that a preset asking for bf16 is fast
everywhere and never trains on a CPU path known to compute garbage.

On the CPU, bf16-mixed runs only where it computes what float32 computes: the CPU has native
bf16, oneDNN does not run its AMX kernels (which corrupted training on Intel CPUs with AMX:
docs/performance.md, "bf16 on the CPU"), and the run's own network, checked at the start,
agrees with float32 (``bf16_disagreement``). Elsewhere the run falls back to float32 with one
warning line, and records 32-true as what ran.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence

import torch
from omegaconf import DictConfig

from bone_age.utils.onednn import ISA_VARIABLES

log = logging.getLogger(__name__)

# A decoded age this far from float32's, on any study, is garbage rather than rounding: bf16
# vs float32 forwards of the same weights differ by 0.0-0.05 y where the kernels are sound.
AGE_TOLERANCE_Y = 0.5


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere it is emulated
    and bf16-mixed is slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


@functools.cache
def onednn_bf16_kernel() -> str:
    """The oneDNN kernel that runs a bf16 convolution in this process and the instruction set
    oneDNN uses (e.g. ``jit_bf16:avx512_core_bf16 (Intel AVX-512 with Intel DL Boost and
    bfloat16 support)``; "" where oneDNN does not say, or is not used).

    oneDNN's verbose mode is the only place that names the instruction set it really uses: its
    cap (``ONEDNN_MAX_CPU_ISA``) is read once, at the process's first primitive, so the
    variable alone does not tell. The verbose lines go to file descriptor 1, captured here;
    asked once a process (the cap, and so the kernel, cannot change after the first primitive).
    """
    if not torch.backends.mkldnn.is_available():
        return ""
    # Channels in multiples of 32: the shapes oneDNN gives its AMX kernels where it may.
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(4, 64, 16, 16)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(1)
        try:
            os.dup2(sink.fileno(), 1)
            with torch.no_grad(), torch.backends.mkldnn.verbose(1), \
                    torch.autocast("cpu", dtype=torch.bfloat16):
                conv(x)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode("ascii", errors="replace")
    # The instruction set is named at oneDNN's first verbose output of the process.
    isa = re.findall(r"info,cpu,isa:([^\n]+)", text)
    found = re.findall(r"exec,cpu,convolution,([^,]+),", text)
    return " ".join([*(found[-1:]), *(f"({name.strip()})" for name in isa[:1])])


def on_cpu(trainer_cfg: DictConfig | dict) -> bool:
    """Whether the trainer's accelerator is the CPU (``auto`` where no CUDA GPU is visible)."""
    accelerator = trainer_cfg.get("accelerator")
    return not (accelerator in ("gpu", "cuda")
                or (accelerator == "auto" and torch.cuda.is_available()))


def _amx_note() -> str:
    isa = next((f"{k}={os.environ[k]}" for k in ISA_VARIABLES if k in os.environ), "")
    return (f"{isa} is set; unset it (bone-age then caps oneDNN at AVX512_CORE_BF16)" if isa
            else "oneDNN was in use before bone-age was imported; import bone_age first")


def supported_precision(trainer_cfg: DictConfig | dict,
                        kernel: Callable[[], str] = onednn_bf16_kernel) -> str:
    """``trainer.precision``, adapted to the hardware so that a preset asking for bf16 is fast
    everywhere and sound: fp16 on a CUDA GPU without bf16 (before Ampere), float32 on a CPU
    without native bf16 or whose bf16 convolutions run on oneDNN's AMX kernels.

    Args:
        trainer_cfg: the ``trainer`` node (``precision``, ``accelerator``).
        kernel: names the oneDNN kernel of a bf16 convolution (tests plant one).
    """
    precision = str(trainer_cfg.get("precision", "32-true"))
    if not precision.startswith("bf16"):
        return precision
    on_gpu = not on_cpu(trainer_cfg)
    if on_gpu and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        fallback = precision.replace("bf16", "16")
        log.warning("this GPU has no bf16: trainer.precision %s -> %s", precision, fallback)
        return fallback
    if on_gpu:
        return precision
    if not cpu_has_bf16():
        log.warning("this CPU has no native bf16: trainer.precision %s -> 32-true", precision)
        return "32-true"
    used = kernel()
    if "amx" in used.lower():
        log.warning("trainer.precision %s -> 32-true: bf16 here would run oneDNN's AMX kernels "
                    "(%s), which trained garbage on CPUs like this one (docs/performance.md); "
                    "%s", precision, used, _amx_note())
        return "32-true"
    return precision


def bf16_disagreement(net: torch.nn.Module, decode: Callable[[torch.Tensor], torch.Tensor],
                      batch_shape: Sequence[int], use_sex: bool = False,
                      repeats: int = 3, channels_last: bool = False) -> str | None:
    """Why the CPU's bf16 autocast cannot be trusted with ``net`` (None: it agrees with float32).

    A strided convolution over a feature map narrower than its kernel (tiny images through a
    deep trunk) is refused from the shapes alone, since there the fault came only some of the
    time. Then a copy of the network, at its initial weights, runs batches of the run's own
    image shape (the faults seen depend on the feature maps' sizes) ``repeats`` times: a forward
    in float32 and under bf16 autocast, then a training step's forward and backward in both
    (the same dropout draws). Refused: a non-finite output, loss or gradient, a decoded age
    more than ``AGE_TOLERANCE_Y`` from float32's, or gradients ``GRAD_TOLERANCE`` times their
    norm from float32's. The run's random state is left as it was.

    Args:
        net: the run's network (not modified).
        decode: the loss's ``predict``: outputs -> predicted ages.
        batch_shape: (N, V, 3, H, W) of a training batch; at most ``CHECK_BATCH`` are used
            (the faults seen came at batch 8 as at 64; a paper-size check stays short).
        use_sex: whether the network takes the sex as an input.
        repeats: batches checked (one forward in three went wrong where others did not).
        channels_last: the run's memory format (``speed.channels_last``: other kernels).
    """
    shape = (min(int(batch_shape[0]), CHECK_BATCH), *batch_shape[1:])
    try:
        return _disagreement(net, decode, shape, use_sex, repeats, channels_last)
    except RuntimeError:  # images the network cannot take at all: training says so itself
        return None


def _disagreement(net: torch.nn.Module, decode: Callable[[torch.Tensor], torch.Tensor],
                  shape: tuple[int, ...], use_sex: bool, repeats: int,
                  channels_last: bool) -> str | None:
    with torch.random.fork_rng(devices=[]):
        probe = copy.deepcopy(net).float()
        if channels_last:
            probe.to(memory_format=torch.channels_last)
        sex = (torch.arange(shape[0]) % 2).float() if use_sex else None
        torch.manual_seed(0)
        small = _strided_conv_on_a_sliver(probe.eval(), torch.randn(*shape), sex)
        if small:
            return small
        for attempt in range(1, repeats + 1):
            torch.manual_seed(attempt)
            images = torch.randn(*shape)
            why = _forward_gap(probe.eval(), decode, images, sex) or \
                _gradient_gap(probe.train(), images, sex, seed=attempt)
            if why:
                return f"{why} (check {attempt} of {repeats})"
    return None


CHECK_BATCH = 8
# bf16 vs float32 gradients of sound kernels differ by up to ~0.4 of their norm (batch norm's
# mean subtraction cancels most of a gradient before it); ten times the norm is garbage.
GRAD_TOLERANCE = 10.0


def _strided_conv_on_a_sliver(probe: torch.nn.Module, images: torch.Tensor,
                              sex: torch.Tensor | None) -> str | None:
    """The first strided convolution whose input feature map is narrower than its kernel.

    There oneDNN's CPU bf16 kernels computed non-finite weight gradients (experiments/
    bf16_cpu): a 3 x 3 stride-2 convolution over a 2 x 1 map on AMD Zen 4 (not over 4 x 2);
    test_resnet and resnet10t at 64 x 32 (layer4's first convolution over 4 x 2), not at
    96 x 48 or 128 x 64, on an Intel CPU with AMX. Tiny images through a deep trunk; decided
    from the shapes, so a run decides the same way every time.
    """
    found: list[str] = []

    def look(name: str):
        def hook(module: torch.nn.modules.conv._ConvNd, args: tuple, output) -> None:
            height, width = args[0].shape[-2:]
            reach = [d * (k - 1) + 1 for k, d in zip(module.kernel_size, module.dilation,
                                                     strict=False)]
            strided = max(module.stride) > 1
            if not found and strided and (height < reach[0] or width < reach[-1]):
                found.append(f"the strided convolution {name} runs over a {height} x {width} "
                             f"feature map, narrower than its {reach[0]} x {reach[-1]} kernel, "
                             "where oneDNN's bf16 kernels gave non-finite gradients; larger "
                             "images (at least 96 x 48 for the ResNet trunks) run in bf16")
        return hook

    handles = [m.register_forward_hook(look(name)) for name, m in probe.named_modules()
               if isinstance(m, torch.nn.modules.conv._ConvNd) and len(m.kernel_size) == 2]
    try:
        with torch.no_grad():
            probe(images, sex)
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def _forward_gap(probe: torch.nn.Module, decode: Callable[[torch.Tensor], torch.Tensor],
                 images: torch.Tensor, sex: torch.Tensor | None) -> str | None:
    with torch.no_grad():
        reference = decode(probe(images, sex).float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = probe(images, sex)
    if not torch.isfinite(outputs).all():
        return "a bf16 forward gave non-finite outputs"
    gap = float((decode(outputs.float()) - reference).abs().max())
    if not gap <= AGE_TOLERANCE_Y:
        return f"a bf16 forward decoded ages up to {gap:.3g} y from float32's"
    return None


def _gradients(probe: torch.nn.Module, images: torch.Tensor, sex: torch.Tensor | None,
               seed: int, bf16: bool) -> list[torch.Tensor]:
    probe.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout draws in both precisions
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = probe(images, sex).float().square().mean()
    loss.backward()
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for p in probe.parameters()]


def _gradient_gap(probe: torch.nn.Module, images: torch.Tensor, sex: torch.Tensor | None,
                  seed: int) -> str | None:
    state = {k: v.clone() for k, v in probe.state_dict().items()}  # batch-norm statistics
    reference = _gradients(probe, images, sex, seed, bf16=False)
    got = _gradients(probe, images, sex, seed, bf16=True)
    probe.load_state_dict(state)
    names = [name for name, _ in probe.named_parameters()]
    for name, ref, grad in zip(names, reference, got, strict=True):
        if not torch.isfinite(grad).all():
            return f"a bf16 backward gave non-finite gradients ({name})"
        scale = float(ref.norm())
        if scale > 0 and float((grad.float() - ref).norm()) > GRAD_TOLERANCE * scale:
            return f"a bf16 backward gave gradients far from float32's ({name})"
    return None
