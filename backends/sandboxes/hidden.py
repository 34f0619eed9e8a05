"""What of the worker's machine a sandboxed process must not see at all.

The filesystem is visible read-only, which keeps writes out but not reads, and a Unix socket
connects through a read-only mount. So these are hidden (an empty folder, /dev/null over a
file): the workspace (the server's address and database, other tasks' checkouts, transcripts),
the user's repository (its untracked `.env`), credentials in HOME, the pipeline's configuration
(the operator's approval key), /run (engine and bus sockets) and the sockets under /tmp (an
ssh-agent, a tmux server). Paths the pipeline itself runs from are never hidden.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

# Credentials and histories in a HOME: folders, then files.
HOME_DIRS = (
    ".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".config/gh", ".docker", ".kube",
    ".claude", ".codex", ".config/autonomous-pipeline", ".local/share/containers",
    ".password-store", ".terraform.d",
)  # fmt: skip
HOME_FILES = (
    ".netrc", ".git-credentials", ".pgpass", ".claude.json", ".npmrc", ".pypirc",
    ".bash_history", ".zsh_history", ".python_history", ".psql_history", ".env",
)  # fmt: skip
_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Hidden:
    dirs: list[Path]
    files: list[Path]


def config_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """The pipeline's own configuration folder (the operator's .env and approval key)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(
        Path(environ.get("HOME") or Path.home()) / ".config"
    )
    return Path(base) / "autonomous-pipeline"


def origin_url(clone: Path) -> str | None:
    """The repository a clone was made from, read from its config file as text."""
    try:
        text = (clone / "config").read_text()
    except OSError:
        return None
    section = re.search(r'^\[remote "origin"\](.*?)(?=^\[|\Z)', text, re.M | re.S)
    url = re.search(r"^\s*url\s*=\s*(.+?)\s*$", section.group(1), re.M) if section else None
    return url.group(1) if url else None


def _needed() -> list[Path]:
    """What the pipeline runs sandboxed processes with: its code and its interpreter."""
    return [p.resolve() for p in {_ROOT, Path(sys.prefix), Path(sys.base_prefix)}]


def _sockets_under(top: Path, depth: int = 2) -> list[Path]:
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(top):
            with contextlib.suppress(OSError):
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISSOCK(mode):
                    found.append(Path(entry.path))
                elif stat.S_ISDIR(mode) and depth > 1:
                    found += _sockets_under(Path(entry.path), depth - 1)
    return found


def hidden_paths(
    workspace: Path, repo: str | None, home: Path, hide_run: bool, also: tuple[Path, ...] = ()
) -> Hidden:
    needed = _needed()
    candidates = [workspace, config_dir(), *also]
    if repo and os.path.isabs(repo) and Path(repo).is_dir():
        candidates.append(Path(repo))
    candidates += [home / d for d in HOME_DIRS]
    if hide_run:
        candidates.append(Path("/run"))
    dirs: list[Path] = []
    for folder in candidates:
        with contextlib.suppress(OSError):
            real = folder.resolve()
            if not real.is_dir() or any(n.is_relative_to(real) for n in needed):
                continue  # hiding it would hide the pipeline itself (it runs from there)
            dirs.append(real)
    files = [p for p in (home / f for f in HOME_FILES) if p.is_file() and not p.is_symlink()]
    for sock in _sockets_under(Path("/tmp")):
        if not any(sock.is_relative_to(d) for d in dirs):
            files.append(sock)
    return Hidden(sorted(set(dirs)), sorted(set(files)))
