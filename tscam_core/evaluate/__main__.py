"""``python -m tscam_core.evaluate``: the command line of ``cli``."""

import sys

from .cli import main

sys.exit(main())
