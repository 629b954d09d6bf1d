"""Entry point: ``python -m bone_age.run [overrides]`` (``-m`` for sweeps such as Table 1)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bone_age.utils.configs import CONF_DIR
from bone_age.utils.console import quiet_third_party, run_summary
from bone_age.utils.errors import EXIT_BAD_INPUT, interrupted, user_error_message

log = logging.getLogger("bone_age")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def run(cfg: DictConfig) -> float | None:
    start = time.perf_counter()
    if not cfg.get("verbose"):
        quiet_third_party()
    # Heavy imports after Hydra has parsed the command line.
    from bone_age.training.train import train

    try:
        metrics = train(cfg).metrics
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        log.error("bone-age run: %s", message)
        sys.exit(EXIT_BAD_INPUT)
    if not metrics:
        return None
    if HydraConfig.get().mode == RunMode.RUN:
        log.info(run_summary(metrics, Path(cfg.paths.output_dir), time.perf_counter() - start))
    else:  # one line per sweep point; the sweep's Table 1 follows at its end
        log.info("test MAE %.2f y (baseline %.2f), r %.3f, n = %d: %s", metrics["mae"],
                 metrics["baseline_mae"], metrics["pearson_r"], metrics["n_test"],
                 cfg.paths.output_dir)
    return metrics["mae"]


def main() -> None:
    """``python -m bone_age.run`` / ``bone-age-run``: Hydra's entry, with Ctrl-C anywhere (the
    sweep's question, a phantom or cache being built, between runs) ending in one line, not
    in Hydra's or the workers' tracebacks."""
    try:
        run()
    except KeyboardInterrupt:
        sys.exit(interrupted("run"))


if __name__ == "__main__":
    main()
