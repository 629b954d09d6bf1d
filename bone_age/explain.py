"""``python -m bone_age.explain``: see :mod:`bone_age.inference.explain`."""

import sys

from bone_age.inference.explain import main

if __name__ == "__main__":
    sys.exit(main())
