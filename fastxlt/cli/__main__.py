"""``python -m fastxlt.cli``: the ``fastxlt`` command (tests run it with ``sys.executable`` so that the code under
test, not an installed console script, is what runs)."""

import sys

from fastxlt.cli import main

sys.exit(main())
