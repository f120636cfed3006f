"""``python -m pointworld ...`` runs the ``pointworld`` command (used with ``torchrun -m pointworld train ...``)."""

import sys

from pointworld.cli import main

sys.exit(main())
