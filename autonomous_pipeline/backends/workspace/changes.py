"""What of an agent's leftovers becomes the task's change, and what makes a change unacceptable.

Pure rules, applied by `backends.workspace.collect`:
- untracked junk (caches, build output, editor swap files, huge files, nested repositories) is
  left out of the commit unless the task names it: `junk_pathspecs` for `git add`, `unwanted`
  for what only shows once staged;
- a symlink that leads out of the repository or into `.git` rejects the change: merged, it
  would let later tools write outside the repository or rewrite its settings;
- deletions of files the task does not name are counted, so that many of them need approval.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

JUNK_DIRS = (
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
    "*.egg-info",
)
JUNK_FILES = (
    "*.pyc",
    "*.pyo",
    "*.swp",
    "*.swo",
    "*.tmp",
    "*.log",
    "*.orig",
    "*.rej",
    "*~",
    ".DS_Store",
    "Thumbs.db",
    ".coverage",
    "nohup.out",
    "core",
    "core.[0-9]*",
)
# An untracked file this large was generated, not written: it stays out unless named.
MAX_UNNAMED_BYTES = 10 * 1024 * 1024


def junk_pathspecs() -> list[str]:
    """`git add` pathspecs that leave junk out; git prunes those folders without walking them."""
    return [f":(exclude,glob)**/{d}/**" for d in JUNK_DIRS] + [
        f":(exclude,glob)**/{f}" for f in JUNK_FILES
    ]


def named_by(path: str, named: Iterable[str]) -> bool:
    """The task names `path`: itself, a folder holding it, or a glob matching it."""
    for name in named:
        name = name.strip().strip("/")
        if not name:
            continue
        if path == name or path.startswith(name + "/") or fnmatch.fnmatchcase(path, name):
            return True
    return False


def junk_reason(path: str, workdir: Path | None = None) -> str:
    """Why an untracked `path` (a folder when it ends with /) was left out, for the transcript."""
    parts = PurePosixPath(path).parts
    if any(fnmatch.fnmatchcase(p, d) for p in parts for d in JUNK_DIRS):
        return "a cache or build folder"
    if path.endswith("/") and workdir is not None:
        folder = workdir / path
        if any(
            g.exists() for g in (folder / ".git", *folder.glob("*/.git"), *folder.glob("*/*/.git"))
        ):
            return "holds a nested git repository"
    if parts and any(fnmatch.fnmatchcase(parts[-1], f) for f in JUNK_FILES):
        return "a cache, log or editor file"
    with contextlib.suppress(OSError):
        if workdir is not None and (size := (workdir / path).lstat().st_size) > MAX_UNNAMED_BYTES:
            return f"{size // (1024 * 1024)} MB"
    return "junk"


def unwanted(path: str, mode: str, workdir: Path, named: Iterable[str]) -> bool:
    """A staged new file that is no work of the task's: a nested repository (never, named or
    not: it would be a link to a repository nobody else has), or a huge file not named."""
    if mode == "160000":
        return True
    if named_by(path, named):
        return False
    try:
        return (workdir / path).lstat().st_size > MAX_UNNAMED_BYTES
    except OSError:
        return False


# Characters git ignores when it compares a name with ".git" on HFS+ (and that a checkout on such
# a disk would ignore too): a link to ".g\u200cit" is a link into .git there.
_IGNORABLE = dict.fromkeys(
    [0x200C, 0x200D, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
)


def is_dot_git(part: str) -> bool:
    """`part` names the .git folder on some filesystem: any case, NTFS's trailing dots and
    spaces and its short name, HFS+'s ignorable characters."""
    name = part.translate(_IGNORABLE).lower().rstrip(". ")
    return name in (".git", "git~1")


def bad_symlink(workdir: Path, path: str) -> str | None:
    """Why `path` is a symlink the pipeline must not merge, or None (not a link, or harmless).

    Merged, a link is followed by every tool in every checkout of the branch: the user's too.
    So it must stay inside the repository, and never lead into a `.git` folder (a link to
    `.git/config` or to `.git` itself would let the next tool rewrite the repository's settings
    or hooks). Absolute targets are refused: they name this machine's layout, not the repository.
    """
    full = workdir / path
    if not full.is_symlink():
        return None
    target = os.readlink(full)
    if os.path.isabs(target):
        return f"{path} is a symlink to the absolute path {target}"
    root = workdir.resolve()
    lexical = Path(os.path.normpath(full.parent / target))
    if not lexical.is_relative_to(workdir):
        return f"{path} is a symlink to {target}, outside the repository"
    if any(is_dot_git(p) for p in lexical.relative_to(workdir).parts):
        return f"{path} is a symlink to {target}, into .git"
    # Followed as far as it exists: a link to a link that leads out is just as bad.
    try:
        followed = full.resolve(strict=False)
    except (RuntimeError, OSError):  # a loop of links (RuntimeError before Python 3.13)
        return f"{path} is a symlink to {target}, which never leads to a file (a loop)"
    if not followed.is_relative_to(root):
        return f"{path} is a symlink to {target}, which leads outside the repository"
    if any(is_dot_git(p) for p in followed.relative_to(root).parts):
        return f"{path} is a symlink to {target}, which leads into .git"
    return None
