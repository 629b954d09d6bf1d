"""``python -m bone_age.evaluate``: see :mod:`bone_age.evaluation.evaluate`."""

import sys

from bone_age.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
