"""``python -m benchmarks``: run every benchmark and rewrite benchmarks/RESULTS.md (see the package doc)."""

import sys

from . import main

sys.exit(main())
