"""Confine a process's writes to the paths it is given, with Linux Landlock.

An agent, a command reviewer and a verification command (which runs code the agent wrote) may
read anything the worker's user can, but write only beneath the paths it is given: the
task's worktree, its private temporary directory, and what the worker adds. Writes anywhere else,
through `..`, an absolute path or a symlink, fail with EACCES: the user's repository, the
pipeline's clone, other tasks' worktrees and the worker's own files are out of reach. The rules
are set by the exec wrapper (`backends/spawn.py`) and bind all descendants; nobody needs privileges.

Landlock needs Linux 5.13 or later with the LSM enabled. Without it `available()` is 0, and
callers decide whether to run unconfined (and say so) or refuse.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on every arch
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

WRITE_FILE = 1 << 1
REMOVE_DIR, REMOVE_FILE = 1 << 4, 1 << 5
MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = (
    1 << 6,
    1 << 7,
    1 << 8,
    1 << 9,
    1 << 10,
    1 << 11,
    1 << 12,
)
REFER = 1 << 13  # ABI 2: rename and link across directories
TRUNCATE = 1 << 14  # ABI 3

# Everything that writes; reading and executing stay allowed everywhere.
_WRITES_V1 = (
    WRITE_FILE
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_CHAR
    | MAKE_DIR
    | MAKE_REG
    | MAKE_SOCK
    | MAKE_FIFO
    | MAKE_BLOCK
    | MAKE_SYM
)
_FILE_RIGHTS = WRITE_FILE | TRUNCATE
# Device nodes (/dev/null, /dev/tty) are written to, never created or removed.
DEVICES = Path("/dev")
WRITABLE_SETTING = "PIPELINE_AGENT_WRITABLE"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@functools.cache
def available() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock cannot be used here."""
    with contextlib.suppress(Exception):
        libc = _libc()
        libc.syscall.restype = ctypes.c_long
        version = libc.syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
        return max(int(version), 0)
    return 0


def extra_writable(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Paths the worker lets every confined process write to as well: PIPELINE_AGENT_WRITABLE,
    separated by ':' (caches of package managers, for instance: ~/.npm, ~/.cache/pip)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(WRITABLE_SETTING, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def handled_rights(abi: int) -> int:
    rights = _WRITES_V1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    return rights


def restrict_writes(writable: Iterable[Path]) -> None:
    """From now on, this process and its descendants write only beneath `writable` (and to
    device nodes). Called by the exec wrapper (`backends/spawn.py`) just before it execs."""
    abi = available()
    if not abi:
        raise OSError("Landlock is not available on this kernel")
    rights = handled_rights(abi)
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    attr = struct.pack("=Q", rights)
    fd = int(libc.syscall(_SYS_CREATE_RULESET, attr, len(attr), 0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path in writable:
            _allow(libc, fd, Path(path), rights)
        _allow(libc, fd, DEVICES, rights & _FILE_RIGHTS, beneath_files=True)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_SYS_RESTRICT_SELF, fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)


def _allow(
    libc: ctypes.CDLL, ruleset: int, path: Path, rights: int, beneath_files: bool = False
) -> None:
    try:
        target = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # nothing there to write into
    try:
        if not beneath_files and not path.is_dir():
            rights &= _FILE_RIGHTS  # a file takes file rights only
        rule = struct.pack("=Qi", rights, target)  # struct landlock_path_beneath_attr, packed
        if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, 0) < 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(target)
