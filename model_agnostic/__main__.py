"""``python -m model_agnostic`` runs the CLI."""

import sys

from .cli import main

sys.exit(main())
