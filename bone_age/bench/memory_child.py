"""Child process of the memory benchmark: one short training run; prints a JSON line."""

from __future__ import annotations

import json
import resource
import sys
import time

from bone_age.bench import training as T
from bone_age.data.datamodule import BoneAgeDataModule
from bone_age.data.preprocess import Preprocess
from bone_age.data.sources import ManifestSource
from bone_age.data.transforms import BatchAugment


def main(argv: list[str]) -> None:
    manifest, cache, h, w, steps, backbone, batch = argv
    t0 = time.perf_counter()
    dm = BoneAgeDataModule(ManifestSource(manifest), Preprocess((int(h), int(w))), cache_dir=cache,
                           augment=BatchAugment(), batch_size=int(batch), num_workers=0,
                           cache_workers=0, progress=False)
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    module = T.make_module(T.make_net(backbone))
    trainer = T.trainer(int(steps))
    trainer.fit(module, datamodule=dm)
    print(json.dumps({"setup_s": setup_s, "fit_s": time.perf_counter() - t0,
                      "studies": len(dm.studies), "steps": trainer.global_step,
                      "self_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main(sys.argv[1:])
