"""CPU bf16 corruption, down to the operation: pure torch, no Lightning, no project code.

Each case runs one operation in bf16 (as autocast runs it on the CPU) and in float32 on the
same bf16-rounded inputs, ``--trials`` times with fresh random inputs, and counts the trials
whose bf16 result is not finite or lies far from float32's (relative max error > 0.1; sound
kernels give ~0.003). The shapes are those of the ResNet trunks' last stages at the image
sizes tried (test_resnet's layer4 takes 192 channels to 96; at 32 x 16 images its first,
strided, 3 x 3 convolution runs over a 2 x 1 map; at 64 x 32 over 4 x 2; at 96 x 48 over 6 x 3).

    python experiments/bf16_cpu/repro.py                  # this process's settings
    python experiments/bf16_cpu/repro.py --matrix         # oneDNN ISA caps x thread counts

``--matrix`` runs the cases again in child processes under ``ONEDNN_MAX_CPU_ISA`` =
(not set), AVX512_CORE_AMX, AVX512_CORE_BF16, AVX512_CORE, AVX2 and with oneDNN switched off,
each at 1 and 2 threads, and prints one table (markdown) with the CPU, torch and oneDNN.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="TF32 acceleration")

BAD_RELATIVE_ERROR = 0.1

# name -> (batch, in channels, out channels, height, width, kernel, stride)
CONVS = {
    "conv3x3 s2 on 2x1": (8, 192, 96, 2, 1, 3, 2),
    "conv3x3 s2 on 2x1, batch 64": (64, 192, 96, 2, 1, 3, 2),
    "conv3x3 s2 on 4x2": (8, 192, 96, 4, 2, 3, 2),
    "conv3x3 s2 on 6x3": (8, 192, 96, 6, 3, 3, 2),
    "conv3x3 s1 on 2x1": (8, 96, 96, 2, 1, 3, 1),
    "conv1x1 s2 on 2x1": (8, 192, 96, 2, 1, 1, 2),
    "conv3x3 s1 on 16x8": (8, 64, 64, 16, 8, 3, 1),
}


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().float(), want.detach()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - want).abs().max() / (want.abs().max() + 1e-12))


def conv_errors(shape: tuple[int, ...], generator: torch.Generator) -> dict[str, float]:
    """Forward, backward-data and backward-weights of one convolution, bf16 vs float32."""
    n, cin, cout, h, w, k, s = shape
    x = torch.randn(n, cin, h, w, generator=generator).bfloat16()
    weight = (torch.randn(cout, cin, k, k, generator=generator) * 0.05).bfloat16()
    xb, wb = x.clone().requires_grad_(), weight.clone().requires_grad_()
    y = F.conv2d(xb, wb, stride=s, padding=k // 2)
    grad = torch.randn(y.shape, generator=generator).bfloat16()
    y.backward(grad)
    xf, wf = x.float().requires_grad_(), weight.float().requires_grad_()
    yf = F.conv2d(xf, wf, stride=s, padding=k // 2)
    yf.backward(grad.float())
    return {"forward": _error(y, yf), "backward-data": _error(xb.grad, xf.grad),
            "backward-weights": _error(wb.grad, wf.grad)}


def norm_linear_errors(generator: torch.Generator) -> dict[str, dict[str, float]]:
    """Batch norm (training) over a 2 x 1 map and a linear layer, forward and backward."""
    out = {}
    x = torch.randn(8, 96, 2, 1, generator=generator)
    for name, op in (("batch norm on 2x1", lambda t: F.batch_norm(t, None, None, training=True)),
                     ("linear 192->41", None)):
        if op is None:
            x = torch.randn(8, 192, generator=generator)
            weight = torch.randn(41, 192, generator=generator) * 0.05
            wb, wf = weight.bfloat16().requires_grad_(), weight.clone().requires_grad_()
            xb, xf = x.bfloat16().requires_grad_(), x.bfloat16().float().requires_grad_()
            y, yf = F.linear(xb, wb), F.linear(xf, wf.bfloat16().float())
        else:
            xb, xf = x.bfloat16().requires_grad_(), x.bfloat16().float().requires_grad_()
            y, yf = op(xb), op(xf)
        grad = torch.randn(y.shape, generator=generator).bfloat16()
        y.backward(grad)
        yf.backward(grad.float())
        out[name] = {"forward": _error(y, yf), "backward-data": _error(xb.grad, xf.grad)}
    return out


def run_cases(trials: int) -> dict[str, dict[str, int]]:
    """case -> part -> trials (of ``trials``) whose bf16 result is non-finite or far off.

    Each case's trials run one after another: the faults seen depend on what the freed
    buffers of the previous trial held (a kernel reading memory it did not write), so
    interleaving the cases hides them.
    """
    bad: dict[str, dict[str, int]] = {}

    def count(name: str, parts: dict[str, float]) -> None:
        for part, err in parts.items():
            slot = bad.setdefault(name, {})
            slot[part] = slot.get(part, 0) + int(not err <= BAD_RELATIVE_ERROR)

    for name, shape in CONVS.items():
        for trial in range(trials):
            count(name, conv_errors(shape, torch.Generator().manual_seed(trial)))
    for trial in range(trials):
        for name, parts in norm_linear_errors(torch.Generator().manual_seed(trial)).items():
            count(name, parts)
    return bad


def machine() -> dict[str, str]:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                      if ln.startswith("model name")), platform.processor())
        cpu_flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                          if ln.startswith("flags")), [])
        flags = " ".join(f for f in cpu_flags if f in ("avx512_bf16", "amx_bf16", "amx_tile"))
    except OSError:
        model = platform.processor()
    onednn = next((ln.strip() for ln in torch.__config__.show().splitlines()
                   if "MKL-DNN" in ln or "oneDNN" in ln), "?")
    return {"cpu": model, "bf16 flags": flags or "none", "torch": torch.__version__,
            "onednn": onednn.lstrip("- ")}


def child(trials: int, threads: int, mkldnn: bool) -> dict:
    torch.set_num_threads(threads)
    with torch.backends.mkldnn.flags(enabled=mkldnn):
        return run_cases(trials)


def matrix(trials: int) -> None:
    variants = [("not set", None, True), ("AVX512_CORE_AMX", "AVX512_CORE_AMX", True),
                ("AVX512_CORE_BF16", "AVX512_CORE_BF16", True),
                ("AVX512_CORE", "AVX512_CORE", True), ("AVX2", "AVX2", True),
                ("oneDNN off", None, False)]
    rows, header = [], None
    for label, isa, mkldnn in variants:
        for threads in (1, 2):
            env = {k: v for k, v in os.environ.items()
                   if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
            if isa:
                env["ONEDNN_MAX_CPU_ISA"] = isa
            cmd = [sys.executable, __file__, "--child", "--trials", str(trials),
                   "--threads", str(threads), *([] if mkldnn else ["--no-onednn"])]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            bad = json.loads(done.stdout)
            header = header or [f"{case}: {part}" for case, parts in bad.items() for part in parts]
            cells = [str(n) for parts in bad.values() for n in parts.values()]
            rows.append((f"{label}, {threads} thread(s)", cells))
    print(" | ".join(f"{k}: {v}" for k, v in machine().items()))
    print(f"\ntrials per cell: {trials}; a cell counts the trials whose bf16 result was "
          f"non-finite or off by > {BAD_RELATIVE_ERROR} (relative) from float32's\n")
    # Transposed (cases down, settings across): many cases, fewer settings.
    print("| case | " + " | ".join(label for label, _ in rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for i, name in enumerate(header or []):
        print(f"| {name} | " + " | ".join(cells[i] for _, cells in rows) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--matrix", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-onednn", action="store_true", help="run with oneDNN switched off")
    args = parser.parse_args()
    if args.matrix:
        matrix(args.trials)
        return
    bad = child(args.trials, args.threads, not args.no_onednn)
    if args.child:
        print(json.dumps(bad))
        return
    print(json.dumps({"machine": machine(), "threads": args.threads, "bad_trials": bad},
                     indent=1))


if __name__ == "__main__":
    main()
