"""Exec wrapper: `python -I -S spawn.py [--parent PID] [--confine --writable PATH...] -- ARGV...`.

Sets up what a long-running child needs between fork and exec, in a process of its own rather
than in a `preexec_fn`: Python code run in a forked copy of a threaded worker can deadlock on a
lock another thread held at fork time (CPython gh-112275), and forking for it is slow. Here:

- with --parent, the parent-death signal, so the child dies with the worker; if the worker died
  before it was set (the parent is no longer PARENT), exit at once (inside a sandbox's namespaces
  the sandbox does this, and there is no --parent);
- with --writable, Landlock confinement of writes (`backends.confine`);
- then exec ARGV, which keeps the pid, the process group and both settings.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1
EXEC_FAILED = 127


def main(args: list[str]) -> int:
    split = args.index("--")
    options, argv = args[:split], args[split + 1 :]
    writable = [Path(options[i + 1]) for i, a in enumerate(options) if a == "--writable"]
    if "--parent" in options:
        parent = int(options[options.index("--parent") + 1])
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            return EXEC_FAILED  # the worker is already gone: nobody wants this child any more
    if "--confine" in options:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from backends.confine import restrict_writes

        restrict_writes(writable)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
    return EXEC_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
