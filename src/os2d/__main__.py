"""``python -m os2d ...`` runs the command line (also under ``torchrun -m os2d``)."""

import sys

from os2d.apps.cli.main import main

sys.exit(main())
