"""Issue 10's real-suite side by side: ``python benchmarks/real_suite.py [--help]``.

Writes benchmarks/REAL_SUITE.md; the work is in ``sidebyside.realsuite``.
"""

from __future__ import annotations

import sys

from sidebyside.realsuite import main

if __name__ == "__main__":
    sys.exit(main())
