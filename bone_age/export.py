"""``python -m bone_age.export``: see :mod:`bone_age.inference.export`."""

import sys

from bone_age.inference.export import main

if __name__ == "__main__":
    sys.exit(main())
