"""`python -m ghostnet` (and `torchrun -m ghostnet`) runs the command line."""

import sys

from .cli import main

sys.exit(main())
