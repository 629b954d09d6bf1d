"""Where the Hydra configs are: ``conf/`` of a source checkout, or ``bone_age/conf`` of a wheel.

The repository keeps its configs at the top level (``conf/``, as lightning-hydra-template does);
``pip install .`` packages the same files as ``bone_age/conf`` (pyproject.toml). An absolute
path, so that ``python -m bone_age.run`` and the installed ``bone-age-run`` script find the same
configs from any working directory.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def conf_dir() -> Path:
    """The folder holding ``config.yaml``: the packaged copy first, else the checkout's."""
    packaged = _PACKAGE / "conf"
    return packaged if (packaged / "config.yaml").is_file() else _PACKAGE.parent / "conf"


CONF_DIR = str(conf_dir())
