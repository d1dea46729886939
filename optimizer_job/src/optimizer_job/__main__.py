"""``python -m optimizer_job``: see ``optimizer_job.cli``."""

from __future__ import annotations

import sys

from optimizer_job.cli import main

if __name__ == "__main__":
    sys.exit(main())
