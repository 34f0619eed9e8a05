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

import functools
import os
from collections.abc import Mapping
from pathlib import Path

from autonomous_pipeline.backends import landlock

WRITABLE_SETTING = "PIPELINE_AGENT_WRITABLE"


@functools.cache
def available() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock cannot be used here."""
    return landlock.abi_version()


def extra_writable(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Paths the worker lets every confined process write to as well: PIPELINE_AGENT_WRITABLE,
    separated by ':' (caches of package managers, for instance: ~/.npm, ~/.cache/pip)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(WRITABLE_SETTING, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
