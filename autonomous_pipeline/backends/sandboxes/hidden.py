"""What of the worker's machine a sandboxed process must not see at all.

The filesystem is visible read-only, which keeps writes out but not reads, and a Unix socket
connects through a read-only mount. So these are hidden (an empty folder, /dev/null over a
file): the workspace (the server's address and database, other tasks' checkouts, transcripts),
the user's repository (its untracked `.env`), the worker's HOME whole (credentials of tools no
list names), the machine's secrets, the pipeline's configuration (the operator's approval key),
/run (engine and bus sockets), /tmp and /var/tmp whole, and the sockets where services keep them
(/var, /srv, /opt). What the pipeline runs from, the toolchains in HOME and the programs an
agent's command line names are shown again inside, read-only.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from git.config import GitConfigParser

from autonomous_pipeline.config import config_dir

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
# Programs in a HOME, shown again when HOME is hidden.
HOME_TOOLCHAINS = (
    ".local/bin", ".local/lib", ".local/share/pipx", ".local/share/claude", ".local/pipx", ".local/share/uv",
    ".nvm", ".volta", ".bun", ".deno", ".npm-global", ".pyenv", ".rbenv", ".nodenv", ".asdf",
    ".rustup", ".cargo/bin", "go/bin", ".sdkman", ".dotnet", ".ghcup", ".opam", ".elan",
    ".juliaup", "miniconda3", "anaconda3", "miniforge3", ".conda",
)  # fmt: skip
# The machine's own secrets: a root worker's sandbox would read them (it keeps uid 0, without
# capabilities, and root owns them).
SYSTEM_DIRS = (
    "/etc/ssh", "/root", "/var/lib/containers", "/var/lib/docker", "/etc/ssl/private",
    "/etc/wireguard", "/etc/letsencrypt", "/etc/NetworkManager/system-connections",
    "/etc/credstore", "/etc/credstore.encrypted", "/var/lib/sss", "/etc/sudoers.d",
)  # fmt: skip
SYSTEM_FILES = (
    "/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/security/opasswd",
    "/var/cache/debconf/passwords.dat", "/etc/sudoers",
)  # fmt: skip
# The pipeline's own code (its checkout, or the folder its package is installed in).
_ROOT = Path(__file__).resolve().parents[3]
# Hidden whole: other users' and tools' files, and sockets made at any time (an ssh-agent's).
SCRATCH = (Path("/tmp"), Path("/var/tmp"))


@dataclass(frozen=True)
class Hidden:
    dirs: list[Path]
    files: list[Path]
    shown: list[Path]  # inside hidden folders, shown again read-only


def origin_url(clone: Path) -> str | None:
    """The repository a clone was made from, read from its config file without running git
    (GitPython's parser: quoting, escapes and comments as git reads them)."""
    config = clone / "config"
    if not config.is_file():
        return None
    try:
        parser = GitConfigParser(str(config), read_only=True)
        url = parser.get_value('remote "origin"', "url", default="")
    except (OSError, ValueError, configparser.Error):
        return None
    return str(url) or None


def _needed() -> list[Path]:
    """What the pipeline runs sandboxed processes with: its code and its interpreter."""
    return [p.resolve() for p in {_ROOT, Path(sys.prefix), Path(sys.base_prefix)}]


def _sockets_under(top: Path, depth: int = 2, skip: frozenset[Path] = frozenset()) -> list[Path]:
    """Unix sockets beneath `top` (not in `skip`), from the directory entries' types: only
    what is neither a folder, a file nor a link costs a stat. Strings, not Paths, inside: a
    walk of /var makes thousands."""
    skipped = {str(p) for p in skip}
    return [Path(p) for p in _walk(str(top), depth, skipped)]


@dataclass(frozen=True)
class _Listing:
    """One folder's scan: its sockets and subfolders, as of its modification time."""

    mtime_ns: int
    sockets: tuple[str, ...]
    folders: tuple[str, ...]


# Every sandboxed step scans the same folders; a folder whose modification time has not moved
# has the same entries (creating, binding, renaming or removing one changes it), so its last scan
# stands. A scan within a second of the folder's change is not kept: a change in the same clock
# tick would not move the time.
_LISTINGS: dict[str, _Listing] = {}
_SETTLED_NS = 1_000_000_000


def _listing(folder: str) -> _Listing | None:
    try:
        mtime = os.stat(folder, follow_symlinks=False).st_mtime_ns
    except OSError:
        return None
    known = _LISTINGS.get(folder)
    if known is not None and known.mtime_ns == mtime:
        return known
    sockets, folders = [], []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    continue
                elif stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    sockets.append(entry.path)
    found = _Listing(mtime, tuple(sockets), tuple(folders))
    if time.time_ns() - mtime > _SETTLED_NS:
        _LISTINGS[folder] = found
    else:
        _LISTINGS.pop(folder, None)
    return found


def _walk(top: str, depth: int, skip: set[str]) -> list[str]:
    found: list[str] = []
    listing = _listing(top)
    if listing is None:
        return found
    found += listing.sockets
    if depth > 1:
        for folder in listing.folders:
            if folder not in skip:
                found += _walk(folder, depth - 1, skip)
    return found


def _real(path: Path) -> Path | None:
    """Where `path` leads, or None when nothing is there (most names of the lists above, on
    most machines: one lstat each, not a resolve of every component)."""
    if not os.path.lexists(path):
        return None
    with contextlib.suppress(OSError):
        return path.resolve()
    return None


def _toolchains(home: Path) -> list[Path]:
    """What of a hidden HOME is programs, shown again: the usual toolchain folders and the
    folders of PATH that are in it (the operator put them there to be run)."""
    listed = [home / t for t in HOME_TOOLCHAINS]
    on_path = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if os.path.isabs(p)]
    found = []
    for folder in [*listed, *on_path]:
        real = _real(folder)
        if real is not None and real.is_dir() and real.is_relative_to(home) and real != home:
            found.append(real)
    return found


def hidden_paths(
    workspace: Path, repo: str | None, home: Path, hide_run: bool, keep: tuple[Path, ...] = ()
) -> Hidden:
    """What to hide, and what to show again inside it, read-only: the pipeline's code and
    interpreter, the toolchains in HOME, and what of `keep` (the agent's program, the scripts
    its command line names) is in scratch space or HOME but not among its credentials."""
    candidates = [workspace, config_dir(), *SCRATCH]
    local = repo.removeprefix("file://") if repo else None
    if local and os.path.isabs(local) and Path(local).is_dir():
        # The repository itself: its working tree, when the run named its .git.
        path = Path(local)
        candidates.append(path.parent if path.name == ".git" else path)
    candidates += [home / d for d in HOME_DIRS] + [Path(d) for d in SYSTEM_DIRS]
    with contextlib.suppress(OSError):
        # The worker's HOME, whole: a list of credential folders is never complete (token
        # stores of tools not named above). Not when it is the root of everything.
        home = home.resolve()
        if home.is_dir() and len(home.parts) > 1:
            candidates.append(home)
    # /run whole, or on the host network (its bus sockets) at least each user's session
    # sockets: a podman's, a gpg-agent's.
    candidates.append(Path("/run") if hide_run else Path("/run/user"))
    dirs: list[Path] = []
    for folder in candidates:
        real = _real(folder)
        if real is not None and real.is_dir():
            dirs.append(real)
    credentials: list[Path] = []
    for name in [*(home / f for f in HOME_FILES), *map(Path, SYSTEM_FILES)]:
        real = _real(name)  # a dotfile linked from elsewhere: its target is what to hide
        if real is not None and real.is_file():
            credentials.append(real)
    # Covered wherever they are, hidden folders included: a folder shown again or writable
    # inside them (PIPELINE_AGENT_WRITABLE=~/.cargo) must not bring them back.
    files = list(credentials)
    # A Unix socket connects through a read-only mount: a container engine's, a database's, an
    # ssh-agent's. /tmp, /var/tmp and HOME are hidden whole; elsewhere, where services keep them.
    places = [(Path("/var"), 6), (Path("/srv"), 4), (Path("/opt"), 4)]
    if not hide_run:  # the host network: /run's sockets stay out of reach all the same
        places.append((Path("/run"), 3))
    skip = frozenset(dirs)
    for place, depth in places:
        for sock in _sockets_under(place, depth, skip):
            if not any(sock.is_relative_to(d) for d in dirs):
                files.append(sock)
    # What a command line names is shown again only from scratch space and HOME: naming the
    # workspace, the user's repository or a credential does not bring it back.
    open_ = {p.resolve() for p in SCRATCH} | {home}
    secret = [d for d in dirs if d not in open_]
    named = [p.resolve() for p in keep if p.exists()]
    # Never a hidden folder itself (a program in HOME named its folder: HOME), which would
    # show it whole again.
    named = [p for p in named if p not in files and p not in dirs
             and not any(p.is_relative_to(d) for d in secret)]  # fmt: skip
    toolchains = [t for t in _toolchains(home) if not any(t.is_relative_to(d) for d in secret)]
    again = [*_needed(), *named, *toolchains]
    shown = sorted({n for n in again if any(n.is_relative_to(d) for d in dirs)})
    return Hidden(sorted(set(dirs)), sorted(set(files)), shown)
