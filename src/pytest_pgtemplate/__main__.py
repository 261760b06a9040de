"""``python -m pytest_pgtemplate``: the ``pgtemplate`` command."""

import sys

from .cli.commands import main

sys.exit(main())
