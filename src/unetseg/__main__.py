"""``python -m unetseg`` runs the command-line tool (also what ``torchrun -m unetseg`` uses)."""

import sys

from .cli import main

sys.exit(main())
