"""``python -m hutch.envd``: the same as ``hutch envd`` (used by the self-contained bundle)."""

import sys

from hutch.envd.main import main

sys.exit(main())
