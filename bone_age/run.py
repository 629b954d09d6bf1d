"""Entry point: ``python -m bone_age.run [overrides]`` (``-m`` for sweeps such as Table 1)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from bone_age.errors import EXIT_BAD_INPUT, user_error_message

log = logging.getLogger("bone_age")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from bone_age.train import train  # heavy imports after Hydra has parsed the command line

    try:
        metrics = train(cfg)
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        log.error("bone-age run: %s", message)
        sys.exit(EXIT_BAD_INPUT)
    if metrics:
        log.info("test MAE %.2f years (baseline %.2f), r %.3f, n = %d",
                 metrics["mae"], metrics["baseline_mae"], metrics["pearson_r"], metrics["n_test"])
        return metrics["mae"]
    return None


if __name__ == "__main__":
    main()
