"""What of the worker's machine a sandboxed process must not see at all.

The filesystem is visible read-only, which keeps writes out but not reads, and a Unix socket
connects through a read-only mount. So these are hidden (an empty folder, /dev/null over a
file): the workspace (the server's address and database, other tasks' checkouts, transcripts),
the user's repository (its untracked `.env`), credentials in HOME, the pipeline's configuration
(the operator's approval key), /run (engine and bus sockets) and the sockets under /tmp (an
ssh-agent, a tmux server). What the pipeline runs from, and the programs an agent's command line
names, are shown again inside, read-only.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from config import config_dir

# Credentials and histories in a HOME: folders, then files.
HOME_DIRS = (
    ".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".config/gh", ".config/hub",
    ".config/git", ".config/containers", ".config/op", ".docker", ".kube", ".rd", ".claude",
    ".codex", ".config/autonomous-pipeline", ".local/share/containers", ".local/share/keyrings",
    ".password-store", ".terraform.d", ".m2", ".gradle", ".cargo/registry",
    ".config/rclone", ".cache/huggingface", ".config/1Password", ".config/doctl",
)  # fmt: skip
HOME_FILES = (
    ".netrc", ".git-credentials", ".gitconfig", ".pgpass", ".claude.json", ".npmrc", ".pypirc",
    ".yarnrc",
    ".cargo/credentials", ".cargo/credentials.toml", ".gem/credentials", ".vault-token",
    ".terraformrc", ".boto", ".s3cfg", ".my.cnf",
    ".bash_history", ".zsh_history", ".python_history", ".psql_history", ".env",
)  # fmt: skip
# The machine's own secrets: a root worker's sandbox would read them (it keeps uid 0, without
# capabilities, and root owns them).
SYSTEM_DIRS = ("/etc/ssh", "/root/.ssh", "/var/lib/containers", "/var/lib/docker")
SYSTEM_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
_ROOT = Path(__file__).resolve().parents[2]
# Hidden whole: other users' and tools' files, and sockets made at any time (an ssh-agent's).
SCRATCH = (Path("/tmp"), Path("/var/tmp"))


@dataclass(frozen=True)
class Hidden:
    dirs: list[Path]
    files: list[Path]
    shown: list[Path]  # inside hidden folders, shown again read-only


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
    workspace: Path, repo: str | None, home: Path, hide_run: bool, keep: tuple[Path, ...] = ()
) -> Hidden:
    """What to hide, and what to show again inside it, read-only: the pipeline's code and
    interpreter, and what of `keep` (the agent's program, the scripts its command line names) is
    in scratch space."""
    candidates = [workspace, config_dir(), *SCRATCH]
    local = repo.removeprefix("file://") if repo else None
    if local and os.path.isabs(local) and Path(local).is_dir():
        # The repository itself: its working tree, when the run named its .git.
        path = Path(local)
        candidates.append(path.parent if path.name == ".git" else path)
    candidates += [home / d for d in HOME_DIRS] + [Path(d) for d in SYSTEM_DIRS]
    if hide_run:
        candidates.append(Path("/run"))
    dirs: list[Path] = []
    for folder in candidates:
        with contextlib.suppress(OSError):
            real = folder.resolve()
            if real.is_dir():
                dirs.append(real)
    files: list[Path] = []
    for name in [*(home / f for f in HOME_FILES), *map(Path, SYSTEM_FILES)]:
        with contextlib.suppress(OSError):
            real = name.resolve()  # a dotfile linked from elsewhere: its target is what to hide
            if real.is_file() and not any(real.is_relative_to(d) for d in dirs):
                files.append(real)
    # A Unix socket connects through a read-only mount: HOME's, and /run's where /run itself
    # stays (the host network: the worker's engine sockets). /tmp and /var/tmp are hidden whole.
    for place in [home, *([] if hide_run else [Path("/run")])]:
        for sock in _sockets_under(place, depth=3):
            if not any(sock.is_relative_to(d) for d in dirs):
                files.append(sock)
    # What a command line names is shown again only from scratch space: naming the workspace,
    # the user's repository or a credential does not bring it back.
    scratch = {p.resolve() for p in SCRATCH}
    secret = [d for d in dirs if d not in scratch]
    named = [p.resolve() for p in keep if p.exists()]
    named = [p for p in named if p not in files and not any(p.is_relative_to(d) for d in secret)]
    shown = sorted({n for n in [*_needed(), *named] if any(n.is_relative_to(d) for d in dirs)})
    return Hidden(sorted(set(dirs)), sorted(set(files)), shown)
