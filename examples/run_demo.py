"""`make demo`: show what the pipeline reads from the example plan.

Prints the plan tree; the full run (a demo repository, the literal agent, merged results) builds on
this once the pipeline can run plans.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    plan = ROOT / "examples" / "demo_plan.md"
    return subprocess.call(
        [sys.executable, str(ROOT / "starter.py"), "--plan", str(plan), "--dry-run"]
    )


if __name__ == "__main__":
    sys.exit(main())
