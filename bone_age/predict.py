"""``python -m bone_age.predict``: see :mod:`bone_age.inference.predict`."""

import sys

from bone_age.inference.predict import main

if __name__ == "__main__":
    sys.exit(main())
