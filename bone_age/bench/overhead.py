"""Item 1: framework overhead. bone-age's LightningModule + Trainer vs a hand-written loop."""

from __future__ import annotations

from typing import Any

from bone_age.bench import training as T
from bone_age.bench.common import Ctx, entry, interleave, paired_ratio, rate


def sizes(ctx: Ctx) -> dict[str, Any]:
    if ctx.quick:
        return {"backbone": "test_resnet", "size": (32, 16), "batch": 4, "steps": 2}
    return {"backbone": "resnet10t", "size": (128, 64), "batch": 16, "steps": 10}


def run(ctx: Ctx) -> list[dict]:
    s = sizes(ctx)
    batches = T.make_batches(s["steps"], s["batch"], s["size"])
    net_l = T.make_net(s["backbone"])
    net_h = T.twin(net_l)
    module = T.make_module(net_l)
    what = (f"dual-input {s['backbone']} at {s['size'][0]}x{s['size'][1]}, batch {s['batch']}, "
            f"Adam, mv loss, {s['steps']} steps per repeat")
    out = []
    for kind, fns in (
        ("train", {"lightning": T.lightning_fit(module, batches),
                   "hand": T.hand_fit(net_h, batches)}),
        ("eval", {"lightning": T.lightning_validate(module, batches),
                  "hand": T.hand_validate(net_h, batches)}),
    ):
        times = interleave(fns, ctx.repeats)
        call = "fit" if kind == "train" else "validate"
        # steps/s ratio lightning / hand = hand time / lightning time
        ratio, spread = paired_ratio(times["hand"], times["lightning"])
        lit, _ = rate(s["steps"], times["lightning"])
        hand, _ = rate(s["steps"], times["hand"])
        out.append(entry(
            f"1 framework overhead, {kind}: Lightning / hand-written steps/s", ratio, "ratio",
            0.97, ">=", spread=spread, repeats=ctx.repeats,
            note=(f"{what}; Lightning {lit:.2f} steps/s vs hand-written {hand:.2f} steps/s "
                  f"(medians). Each Lightning repeat is a whole trainer.{call}() "
                  "call (fresh Trainer, logger/checkpointing/progress bar off), so its fixed setup "
                  "cost is included."),
            lightning_steps_per_s=lit, hand_steps_per_s=hand))
    return out
