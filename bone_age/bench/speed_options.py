"""Item 7: speed options (precision, channels-last, torch.compile) against the default."""

from __future__ import annotations

import time
import traceback
from typing import Any

import torch

from bone_age.bench import training as T
from bone_age.bench.common import Ctx, entry, interleave, paired_ratio, rate
from bone_age.bench.overhead import sizes


def run(ctx: Ctx) -> list[dict]:
    s = sizes(ctx)
    batches = T.make_batches(s["steps"], s["batch"], s["size"])
    base = T.make_net(s["backbone"])
    variants: dict[str, Any] = {"default": T.lightning_fit(T.make_module(T.twin(base)), batches)}
    variants["bf16-mixed"] = T.lightning_fit(T.make_module(T.twin(base)), batches, "bf16-mixed")
    cl_net = T.twin(base).to(memory_format=torch.channels_last)
    variants["channels-last"] = T.lightning_fit(T.make_module(cl_net), batches)
    compile_note = ""
    compile_s = None
    if ctx.quick:  # a deliberate skip, not a failure: no traceback
        compile_note = "skipped in --quick mode (compilation takes minutes)"
    else:
        try:
            compiled = torch.compile(T.twin(base))
            fn = T.lightning_fit(T.make_module(compiled), batches)
            t0 = time.perf_counter()
            fn()  # first call compiles (forward and backward graphs)
            compile_s = time.perf_counter() - t0
            variants["torch.compile"] = fn
        except Exception as err:  # inductor needs a C++ toolchain; record why it failed
            compile_note = f"torch.compile failed: {type(err).__name__}: {str(err)[:300]}"
            traceback.print_exc()
    times = interleave(variants, ctx.repeats)
    default_rate, _ = rate(s["steps"], times["default"])
    what = (f"Lightning fit, dual-input {s['backbone']} at {s['size'][0]}x{s['size'][1]}, "
            f"batch {s['batch']}, {s['steps']} steps per repeat; "
            f"default {default_rate:.2f} steps/s")
    out = []
    for name in ("bf16-mixed", "channels-last", "torch.compile"):
        if name not in times:
            out.append(entry(f"7 speed option {name}: steps/s vs default", None, "ratio",
                             note=compile_note))
            continue
        ratio, spread = paired_ratio(times["default"], times[name])
        note = what
        if name == "torch.compile":
            note += f"; first fit (compilation + {s['steps']} steps) took {compile_s:.1f} s"
        out.append(entry(f"7 speed option {name}: steps/s vs default", ratio, "ratio",
                         spread=spread, repeats=ctx.repeats, note=note))
    return out
