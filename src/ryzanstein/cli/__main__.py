"""`python -m ryzanstein.cli ...`, as the `ryzanstein` script."""
import sys

from .main import main

sys.exit(main())
