"""Exec wrapper: `python -I -S spawn.py [--parent PID] [--new-keyring] [--confine --writable
PATH...] [--ready-fd FD] -- ARGV...`.

Sets up what a long-running child needs between fork and exec, in a process of its own rather
than in a `preexec_fn`: Python code run in a forked copy of a threaded worker can deadlock on a
lock another thread held at fork time (CPython gh-112275), and forking for it is slow. Here:

- with --parent, the parent-death signal, so the child dies with the worker; if the worker died
  before it was set (the parent is no longer PARENT), exit at once (inside a sandbox's namespaces
  the sandbox does this, and there is no --parent);
- with --writable, Landlock confinement of writes (`backends.confine`);
- with --new-keyring, a session keyring of its own: the kernel's keyrings are not namespaced,
  and the worker's session keyring (where a login or a service put keys) would be readable and
  writable from a sandbox;
- with --ready-fd, one byte written to FD (then closed) once all of that is in place: the
  sandbox that ran this wrapper is up, so what follows is the command's doing, not the wall's;
- then exec ARGV, which keeps the pid, the process group and these settings.

It runs once for every sandboxed process, before the process itself: it imports only what it
uses, and no module of the package but `landlock` (by its folder), since every import here is
time an agent or a check waits for (pathlib and signal would triple the interpreter's start).
"""

from __future__ import annotations

import ctypes
import os
import sys

_PR_SET_PDEATHSIG = 1
_SIGKILL = 9  # the same number on every Linux architecture
EXEC_FAILED = 127
_KEYCTL_JOIN_SESSION_KEYRING = 1
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "armv7l": 311, "ppc64le": 271, "s390x": 280}


def new_session_keyring() -> None:
    """Join a new, empty, anonymous session keyring."""
    number = _SYS_KEYCTL.get(os.uname().machine)
    if number is None:
        raise OSError(f"no keyctl syscall number known for {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(number, _KEYCTL_JOIN_SESSION_KEYRING, None) < 0:
        raise OSError(ctypes.get_errno(), "keyctl(KEYCTL_JOIN_SESSION_KEYRING) failed")


def main(args: list[str]) -> int:
    split = args.index("--")
    options, argv = args[:split], args[split + 1 :]
    writable = [options[i + 1] for i, a in enumerate(options) if a == "--writable"]
    if "--parent" in options:
        parent = int(options[options.index("--parent") + 1])
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, _SIGKILL)
        if os.getppid() != parent:
            return EXEC_FAILED  # the worker is already gone: nobody wants this child any more
    if "--new-keyring" in options:
        new_session_keyring()
    if "--confine" in options:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from landlock import restrict_writes

        restrict_writes(writable)
    if "--ready-fd" in options:
        ready = int(options[options.index("--ready-fd") + 1])
        os.write(ready, b"1")
        os.close(ready)  # the command does not keep it
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
    return EXEC_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
