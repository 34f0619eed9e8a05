"""Linux Landlock, by its system calls: the rules `backends.confine` describes.

This module imports nothing but `os`, `ctypes` and `struct`, and nothing of the package: the exec
wrapper (`backends/spawn.py`) loads it by its folder in a bare interpreter (`python -I -S`), once
per sandboxed process, where every imported module is time the agent or check waits for (pathlib
alone costs more than the interpreter's own start).
"""

from __future__ import annotations

import ctypes
import os
import struct

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on every arch
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

WRITE_FILE = 1 << 1
REMOVE_DIR, REMOVE_FILE = 1 << 4, 1 << 5
MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK = 1 << 6, 1 << 7, 1 << 8, 1 << 9
MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 10, 1 << 11, 1 << 12
REFER = 1 << 13  # ABI 2: rename and link across directories
TRUNCATE = 1 << 14  # ABI 3

# Everything that writes; reading and executing stay allowed everywhere.
WRITES_V1 = (
    WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK
    | MAKE_FIFO | MAKE_BLOCK | MAKE_SYM
)  # fmt: skip
FILE_RIGHTS = WRITE_FILE | TRUNCATE
# Device nodes (/dev/null, /dev/tty) are written to, never created or removed.
DEVICES = "/dev"


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock cannot be used here."""
    try:
        return max(int(_libc().syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)), 0)
    except Exception:
        return 0


def handled_rights(abi: int) -> int:
    rights = WRITES_V1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    return rights


def restrict_writes(writable: list[str]) -> None:
    """From now on, this process and its descendants write only beneath `writable` (and to
    device nodes)."""
    abi = abi_version()
    if not abi:
        raise OSError("Landlock is not available on this kernel")
    rights = handled_rights(abi)
    libc = _libc()
    attr = struct.pack("=Q", rights)
    fd = int(libc.syscall(_SYS_CREATE_RULESET, attr, len(attr), 0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path in writable:
            _allow(libc, fd, path, rights)
        _allow(libc, fd, DEVICES, rights & FILE_RIGHTS, beneath_files=True)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_SYS_RESTRICT_SELF, fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)


def _allow(
    libc: ctypes.CDLL, ruleset: int, path: str, rights: int, beneath_files: bool = False
) -> None:
    try:
        target = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # nothing there to write into
    try:
        if not beneath_files and not os.path.isdir(path):
            rights &= FILE_RIGHTS  # a file takes file rights only
        rule = struct.pack("=Qi", rights, target)  # struct landlock_path_beneath_attr, packed
        if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, 0) < 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(target)
