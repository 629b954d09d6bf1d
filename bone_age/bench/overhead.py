"""Item 1: framework overhead. bone-age's LightningModule + Trainer vs a hand-written loop.

Two figures per kind: steady-state steps/s (batches 1.., timed inside the loop on both sides;
the target), and the whole call (a fresh Trainer's set-up and tear-down included, paid once per
run of ~100 epochs; reported without a target).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from bone_age.bench import training as T
from bone_age.bench.common import Ctx, entry, interleave, paired_ratio, rate


def sizes(ctx: Ctx) -> dict[str, Any]:
    if ctx.quick:
        return {"backbone": "test_resnet", "size": (32, 16), "batch": 4, "steps": 3}
    return {"backbone": "resnet10t", "size": (128, 64), "batch": 16, "steps": 16}


def _whole_call_too(fn, wholes: list[float]):
    def run() -> float:
        start = time.perf_counter()
        steady = fn()
        wholes.append(time.perf_counter() - start)
        return steady
    return run


def run(ctx: Ctx) -> list[dict]:
    s = sizes(ctx)
    batches = T.make_batches(s["steps"], s["batch"], s["size"])
    net_l = T.make_net(s["backbone"])
    net_h = T.twin(net_l)
    module = T.make_module(net_l)
    steady_steps = s["steps"] - 1
    # Per-repeat noise is about +-5%, larger than the 3% margin: more repeats than elsewhere, on
    # one torch thread (two threads on two cores stall at OpenMP barriers whenever any other
    # process runs, which doubles the spread).
    repeats = ctx.repeats if ctx.quick else max(ctx.repeats, 21)
    what = (f"dual-input {s['backbone']} at {s['size'][0]}x{s['size'][1]}, batch {s['batch']}, "
            f"Adam, mv loss, {s['steps']} steps per repeat, one torch thread")
    out = []
    for kind, lightning, hand in (
        ("train", T.lightning_fit(module, batches, steady=True),
         T.hand_fit(net_h, batches, steady=True)),
        ("eval", T.lightning_validate(module, batches, steady=True),
         T.hand_validate(net_h, batches, steady=True)),
    ):
        wholes: dict[str, list[float]] = {"lightning": [], "hand": []}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            times = interleave({"lightning": _whole_call_too(lightning, wholes["lightning"]),
                                "hand": _whole_call_too(hand, wholes["hand"])},
                               repeats, self_timed=True)
        finally:
            torch.set_num_threads(threads)
        ratio, spread = paired_ratio(times["hand"], times["lightning"])
        lit, _ = rate(steady_steps, times["lightning"])
        own, _ = rate(steady_steps, times["hand"])
        out.append(entry(
            f"1 framework overhead, {kind}: Lightning / hand-written steps/s (steady state)",
            ratio, "ratio", 0.97, ">=", spread=spread, repeats=repeats,
            note=(f"{what}; batches 1-{steady_steps} timed inside the loop on both sides "
                  f"(Lightning: a callback at batch start/end): Lightning {lit:.2f} steps/s vs "
                  f"hand-written {own:.2f} steps/s (medians)"),
            lightning_steps_per_s=lit, hand_steps_per_s=own))
        # the warm-up call is in wholes too; pair the timed repeats only
        lw, hw = wholes["lightning"][-repeats:], wholes["hand"][-repeats:]
        ratio, spread = paired_ratio(hw, lw)
        fixed = statistics.median(a - b for a, b in zip(lw, hw, strict=True))
        call = "fit" if kind == "train" else "validate"
        out.append(entry(
            f"1 framework overhead, {kind}: whole trainer.{call}() call / hand-written loop",
            ratio, "ratio", spread=spread, repeats=repeats,
            note=(f"{what}; a fresh Trainer per call (logger, checkpointing, progress bar off): "
                  f"set-up and tear-down add {fixed:.2f} s per call, paid once per run"),
            fixed_seconds=fixed))
    return out
