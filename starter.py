"""Start, follow and steer plan runs: `python starter.py --plan MASTER_PLAN.md`."""

from __future__ import annotations

import os
import sys

from cli.logs import configure_logging
from cli.main import main

if __name__ == "__main__":
    configure_logging()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal SDK can crash while the interpreter tears down; the work is done by then.
    os._exit(code)
