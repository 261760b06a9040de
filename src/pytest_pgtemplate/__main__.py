"""``python -m pytest_pgtemplate``: the ``pgtemplate`` command."""

import sys

from ._cli import main

sys.exit(main())
