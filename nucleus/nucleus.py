"""``python nucleus.py train|detect|evaluate|submit ...`` from this folder (matterport's habit).

Run as a script, this folder is first on ``sys.path`` and this file would hide the ``nucleus``
package; put the repository root first instead, then hand over to the package's command line.
"""
import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))
    from nucleus.cli import main

    sys.exit(main())
