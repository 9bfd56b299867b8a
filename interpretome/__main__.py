"""``python -m interpretome`` runs the command line."""

import sys

from .cli import main

sys.exit(main())
