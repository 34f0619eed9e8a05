"""What of an agent's leftovers becomes the task's change, and what makes a change unacceptable.

Pure rules, applied by `GitWorktreeSandbox.commit_all`:
- untracked junk (caches, build output, editor swap files, huge files, nested repositories) is
  left out of the commit unless the task names it;
- a symlink that leads out of the worktree rejects the change: merged, it would let later tools
  write outside the repository;
- deletions of files the task does not name are counted, so that many of them need approval.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

JUNK_DIRS = frozenset(
    {
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".hypothesis",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        "node_modules",
        ".cache",
        ".idea",
        "htmlcov",
        ".eggs",
    }
)
JUNK_SUFFIXES = (".pyc", ".pyo", ".swp", ".swo", ".tmp", ".log", ".orig", ".rej", "~")
JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", ".coverage", "nohup.out", "core"})
# An untracked file this large was generated, not written: it stays out unless named.
MAX_UNNAMED_BYTES = 10 * 1024 * 1024


def named_by(path: str, named: Iterable[str]) -> bool:
    """The task names `path`: itself, a folder holding it, or a glob matching it."""
    for name in named:
        name = name.strip().strip("/")
        if not name:
            continue
        if path == name or path.startswith(name + "/") or fnmatch.fnmatchcase(path, name):
            return True
    return False


def junk_reason(path: str, size: int | None) -> str | None:
    """Why an untracked `path` is junk, or None when it looks like work."""
    if path.endswith("/"):
        return "a nested git repository"
    parts = PurePosixPath(path).parts
    if dirs := [p for p in parts[:-1] if p in JUNK_DIRS or p.endswith(".egg-info")]:
        return f"inside {dirs[0]}/"
    name = parts[-1] if parts else path
    if name in JUNK_NAMES or name.endswith(JUNK_SUFFIXES) or name.startswith("core."):
        return "a cache, log or editor file"
    if size is not None and size > MAX_UNNAMED_BYTES:
        return f"{size // (1024 * 1024)} MB"
    return None


def split_untracked(
    workdir: Path, untracked: Iterable[str], named: Iterable[str]
) -> tuple[list[str], list[str]]:
    """(paths to commit, junk left out, each with its reason)."""
    named = list(named)
    keep: list[str] = []
    junk: list[str] = []
    for path in untracked:
        if named_by(path.rstrip("/"), named):
            keep.append(path)
            continue
        try:
            size: int | None = (workdir / path).lstat().st_size
        except OSError:
            size = None
        reason = junk_reason(path, size)
        if reason is None:
            keep.append(path)
        else:
            junk.append(f"{path} ({reason})")
    return keep, junk


def escaping_symlink(workdir: Path, path: str) -> str | None:
    """The target of `path` when it is a symlink that leads out of `workdir`, else None."""
    full = workdir / path
    if not full.is_symlink():
        return None
    target = os.readlink(full)
    root = workdir.resolve()
    resolved = Path(os.path.normpath(full.parent / target))
    # Resolved as far as it exists: a link to a link outside is just as bad.
    with_links = full.resolve(strict=False)
    if not (resolved.is_relative_to(workdir) or resolved.is_relative_to(root)) or not (
        with_links.is_relative_to(root)
    ):
        return target
    return None
