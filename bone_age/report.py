"""``python -m bone_age.report``: see :mod:`bone_age.evaluation.table1`."""

import sys

from bone_age.evaluation.table1 import main

if __name__ == "__main__":
    sys.exit(main())
