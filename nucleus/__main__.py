"""``python -m nucleus ...``: the command line (see nucleus/cli.py)."""
import sys

from nucleus.cli import main

sys.exit(main())
