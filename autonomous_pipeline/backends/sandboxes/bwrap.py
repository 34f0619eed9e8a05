"""The bubblewrap command line of the worktree sandbox. Pure: paths in, argv out.

What the process gets (mounts are applied shallowest path first, so the deeper one wins; at one
depth, in this order):
- its own user, PID, IPC, UTS, cgroup and network namespaces, no capabilities, a new session
  (so it cannot push keys into the worker's terminal), and death with its parent;
- the host's filesystem read-only, a /proc of its own PID namespace (it sees and signals only
  its own processes: not the worker, not its environment) and a minimal /dev;
- hidden (an empty tmpfs, or /dev/null over a file): the workspace's control plane (server
  state, database, other tasks' checkouts), the user's repository, credentials in HOME, the
  pipeline's configuration, /run and the sockets in /tmp (a Unix socket connects through a
  read-only mount: a container engine's socket is root on the host);
- read-only again: what it needs from inside hidden folders (the clone's objects, with a config
  that names no remote);
- writable: the checkout, the task's TMPDIR and HOME, and what the worker adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autonomous_pipeline.models.sandbox import AgentNetwork

BWRAP = "bwrap"


@dataclass(frozen=True)
class Mounts:
    workdir: Path
    writable: list[Path]  # bound read-write at their own path (the workdir among them)
    hidden_dirs: list[Path] = field(default_factory=list)
    hidden_files: list[Path] = field(default_factory=list)
    # (source, destination) bound read-only after hiding: what it needs from hidden places.
    readonly: list[tuple[Path, Path]] = field(default_factory=list)


def mount_args(mounts: Mounts) -> list[str]:
    """The mounts, shallowest path first: a mount covers what was mounted below it before, so
    the deeper one must come later to count. A folder shown again inside a hidden one must not
    bring back what is hidden inside it (a workspace in a clone shown from /tmp), nor may a
    hidden folder cover the checkout bound inside it."""
    ops: list[tuple[Path, list[str]]] = []
    ops += [(d, ["--tmpfs", str(d)]) for d in mounts.hidden_dirs]
    ops += [(f, ["--ro-bind", "/dev/null", str(f)]) for f in mounts.hidden_files]
    ops += [(dest, ["--ro-bind", str(src), str(dest)]) for src, dest in mounts.readonly]
    ops += [(p, ["--bind", str(p), str(p)]) for p in mounts.writable]
    # Stable: at one depth, hiding comes before showing, and showing before writing.
    ops.sort(key=lambda op: len(op[0].parts))
    return [arg for _, args in ops for arg in args]


def bwrap_argv(
    mounts: Mounts,
    network: AgentNetwork,
    command: list[str],
    info_fd: int | None = None,
    block_fd: int | None = None,
) -> list[str]:
    argv = [
        BWRAP,
        "--die-with-parent",
        "--new-session",
        "--unshare-all",
        *(["--share-net"] if network is AgentNetwork.HOST else []),
        "--cap-drop", "ALL",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/dev/shm",
    ]  # fmt: skip
    argv += mount_args(mounts)
    argv += ["--chdir", str(mounts.workdir)]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    if block_fd is not None:
        argv += ["--block-fd", str(block_fd)]
    return [*argv, "--", *command]
