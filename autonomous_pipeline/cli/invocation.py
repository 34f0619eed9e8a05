"""How this process was started, so the commands it suggests are ones the user can paste.

From a checkout the tools are `python starter.py` and `python worker.py`; installed (a wheel,
pipx) they are the console scripts `autonomous-pipeline` and `autonomous-pipeline-worker`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

STARTER_SCRIPT = "autonomous-pipeline"
WORKER_SCRIPT = "autonomous-pipeline-worker"


def _from_checkout() -> bool:
    return Path(sys.argv[0]).name in ("starter.py", "worker.py")


def starter() -> str:
    """The command that starts and steers runs, as typed."""
    return "python starter.py" if _from_checkout() else STARTER_SCRIPT


def starter_prog() -> str:
    """The program name in help and usage lines."""
    return "starter.py" if _from_checkout() else STARTER_SCRIPT


def worker_prog() -> str:
    return "worker.py" if _from_checkout() else WORKER_SCRIPT


def worker() -> str:
    """The command that starts a worker, as typed."""
    return "python worker.py" if _from_checkout() else WORKER_SCRIPT


def worker_argv() -> list[str]:
    """How this process starts a worker of its own (a detached run's): the installed module, so
    it works from a checkout and from a wheel alike."""
    return [sys.executable, "-m", "autonomous_pipeline.worker"]


def exit_after(main: Callable[[], int]) -> NoReturn:
    """Run an entry point and leave with its code, without the interpreter's teardown: the
    Temporal SDK can crash there, and the work is done by then."""
    from autonomous_pipeline import tracing
    from autonomous_pipeline.cli.logs import configure_logging

    configure_logging()
    code = main()
    tracing.shutdown()  # the spans still queued: os._exit skips the provider's own flush
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
