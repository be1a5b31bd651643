"""``python -m spray``: the same command line as ``spray``."""
import sys

from .cli import main

sys.exit(main())
