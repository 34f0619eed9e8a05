"""The `worktree` sandbox: a git worktree on the worker, its processes in namespaces of their own.

Each process (an agent, a command reviewer, a verification command) runs under bubblewrap
(`backends.sandboxes.bwrap`): it sees the host read-only but for its checkout, TMPDIR and HOME,
sees nothing of the control plane or the worker's credentials, sees and signals only its own
processes, and has the network the run chose. When it ends, everything it started ends with it:
its PID namespace dies with it, `setsid` or not. Landlock (`backends.confine`) stays inside as a
second wall on writes.

With `isolation` off (--no-isolation, for machines without user namespaces) processes run on
the host with Landlock alone: writes stay confined, but they can read what the worker can,
signal its processes and reach its network. Only the operator, on the command line, chooses that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from autonomous_pipeline.backends import confine
from autonomous_pipeline.backends._proc import SPAWN, ProcResult, check_executable, run_process
from autonomous_pipeline.backends.base import Exec, Role, SandboxError, View
from autonomous_pipeline.backends.sandboxes import slirp
from autonomous_pipeline.backends.sandboxes.bwrap import BWRAP, Mounts, bwrap_argv
from autonomous_pipeline.backends.sandboxes.common import GitSandbox
from autonomous_pipeline.backends.sandboxes.hidden import SCRATCH, hidden_paths, origin_url
from autonomous_pipeline.backends.workspace.checkout import Checkout
from autonomous_pipeline.backends.workspace.clones import Clones
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.sandbox import AgentNetwork, SandboxKind

log = logging.getLogger(__name__)
# Inside the sandbox these are tmpfs of its own (bwrap_argv, hidden.SCRATCH): never the host's.
PRIVATE_TMPFS = (Path("/dev/shm"), *SCRATCH)
NO_ISOLATION_HINT = (
    "or pass --no-isolation to run agents without namespaces (they can then read what the "
    "worker can read, signal its processes and reach its network)"
)


class WorktreeSandbox(GitSandbox):
    kind = SandboxKind.WORKTREE

    def runner(self, task: TaskRef, checkout: Checkout, role: Role) -> WorktreeRunner:
        return WorktreeRunner(self, task, checkout, role)

    def _landlock(self) -> bool:
        if not self.config.confine:
            return False
        if not confine.available():
            _warn_once("Landlock is not available on this kernel: writes are confined by "
                       "namespaces only" if self.config.isolation else
                       "Landlock is not available: agents and checks run unconfined")  # fmt: skip
            return False
        return True

    def resolv_conf(self) -> Path:
        path = self.layout.sandbox_dir() / "resolv.conf"
        if not path.is_file() or path.read_text() != slirp.RESOLV_CONF:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(slirp.RESOLV_CONF)
        return path

    async def preflight(self) -> str | None:
        if not self.config.isolation:
            return None
        return await namespaces_problem(self.config.network)


class WorktreeRunner:
    host_programs = True  # the process runs the worker's own programs

    def __init__(
        self, sandbox: WorktreeSandbox, task: TaskRef, checkout: Checkout, role: Role
    ) -> None:
        self.sandbox, self.task, self.checkout = sandbox, task, checkout
        self.host = sandbox.host_view(task, checkout, role)
        isolated = sandbox.config.isolation
        # Without namespaces HOME stays the worker's: a CLI's login lives there.
        home = self.host.home if isolated else Path(os.environ.get("HOME") or Path.home())
        self.inside = View(self.host.workdir, self.host.tmp, home)

    def _writable(self) -> list[Path]:
        own = [self.host.workdir, self.host.tmp]
        if self.sandbox.config.isolation:
            # Its HOME, and the sandbox's own tmpfs: /dev/shm (semaphores, shared memory;
            # multiprocessing and test runners need it), /tmp and /var/tmp (for tools that
            # ignore TMPDIR). They vanish with the sandbox.
            own += [self.host.home, *PRIVATE_TMPFS]
        return [*own, *confine.extra_writable()]

    async def run(self, job: Exec) -> ProcResult:
        cfg = self.sandbox.config
        env = {**job.env, "TMPDIR": str(self.inside.tmp), "HOME": str(self.inside.home)}
        writable = self._writable()
        landlock = writable if job.confine and self.sandbox._landlock() else None
        common = dict(
            cwd=self.host.workdir,
            env=env,
            timeout_s=job.timeout_s,
            stdin=job.stdin,
            transcript=job.transcript,
            on_line=job.on_line,
            tail_chars=job.tail_chars,
            record=self.sandbox.record(self.task),
        )
        if not cfg.isolation:
            return await run_process(job.argv, confine=landlock, **common)  # type: ignore[arg-type]
        if shutil.which(BWRAP) is None:
            raise SandboxError(f"the worktree sandbox needs bubblewrap on this worker, "
                               f"{NO_ISOLATION_HINT}")  # fmt: skip
        # Raised here as exec would, so a missing agent is reported as such, not as bwrap's exit.
        check_executable(job.argv[0], self.host.workdir, env)
        program = Path(shutil.which(job.argv[0], path=env.get("PATH")) or job.argv[0])
        # What the command line names stays visible (read-only) inside hidden folders: the
        # program's own folder (an npm CLI's modules) and the files it is given.
        # The program itself, and its real location (a link in ~/.local/bin to an install
        # elsewhere), with its folders; never a folder that is hidden whole (hidden_paths).
        real = program.resolve()
        named = [program, program.parent, real, real.parent]
        named += [Path(a) for a in job.argv[1:] if os.path.isabs(a)]
        # Inside the sandbox, through the exec wrapper: a keyring of its own, and Landlock.
        internet = cfg.network is AgentNetwork.INTERNET
        launch = Launch(cfg.network, self.sandbox.refused if internet else None)
        wrapper = [sys.executable, "-I", "-S", str(SPAWN), "--new-keyring"]
        wrapper += ["--ready-fd", str(launch.ready_w)]
        if landlock is not None:
            wrapper.append("--confine")
            for path in landlock:
                wrapper += ["--writable", str(path)]
        command = [*wrapper, "--", *job.argv]
        try:
            mounts = self._mounts(writable, cfg.network is AgentNetwork.INTERNET, named)
            argv = bwrap_argv(mounts, cfg.network, command, launch.info_w, launch.block_fd)
            res = await run_process(
                argv,
                die_with_parent=False,  # bwrap's --die-with-parent does it
                pass_fds=launch.child_fds(),
                on_spawn=launch.started,
                **common,  # type: ignore[arg-type]
            )
            up = launch.went_up()
        finally:
            await launch.close()
        if not up and not res.timed_out:
            # The wall never went up: no command ran, so none failed (or passed).
            said = " ".join(res.output.split())[-500:]
            raise SandboxError(f"the worktree sandbox could not start {job.argv[0]}: {said}")
        return res

    def _mounts(self, writable: list[Path], internet: bool, named: list[Path]) -> Mounts:
        clone = self.checkout.clone
        hidden = hidden_paths(
            self.sandbox.layout.root,
            origin_url(clone),
            Path(os.environ.get("HOME") or Path.home()),
            hide_run=self.sandbox.config.network is not AgentNetwork.HOST,
            keep=tuple(named),
        )
        existing = [p for p in writable if p.exists() and p not in PRIVATE_TMPFS]
        # Shown read-only, except inside what it may write: a deeper read-only mount would
        # cover the writable one (a log folder its command line names).
        shown = [p for p in hidden.shown if not any(p.is_relative_to(w) for w in existing)]
        readonly = [(p, p) for p in shown]
        # The clone, so that git works in the checkout, with a config that names no remote.
        readonly += [(clone, clone), (Clones.sandbox_config(clone), clone / "config")]
        if internet:
            readonly.append((self.sandbox.resolv_conf(), Path("/etc/resolv.conf")))
        return Mounts(self.host.workdir, existing, hidden.dirs, hidden.files, readonly)


class Launch:
    """What tells whether a sandbox went up: bubblewrap's `--info-fd` (its child's pid) and the
    exec wrapper's ready byte (written inside, once the wall and its confinement are in place).
    For `internet`, the network is attached to that child before it is let go (`--block-fd`)."""

    def __init__(self, network: AgentNetwork, refused: list[str] | None = None) -> None:
        self.info_r, self.info_w = os.pipe()
        self.ready_r, self.ready_w = os.pipe()
        internet = network is AgentNetwork.INTERNET
        self.net = slirp.Internet(refused) if internet else None
        self.child: int | None = None

    @property
    def block_fd(self) -> int | None:
        return self.net.block_fd if self.net is not None else None

    def child_fds(self) -> list[int]:
        """Inherited by bubblewrap: the ready fd passes on to the wrapper inside."""
        net = [self.net.block_fd] if self.net is not None else []
        return [self.info_w, self.ready_w, *net]

    async def started(self, _bwrap_pid: int) -> None:
        for fd in (self.info_w, self.ready_w):
            os.close(fd)
        self.info_w = self.ready_w = -1
        if self.net is not None:  # the sandbox waits on its block fd until this is done
            info = await asyncio.wait_for(asyncio.to_thread(_read_all, self.info_r), 10)
            self.child = _child_pid(info)
            if self.child is None:
                return  # it failed before its child ran: its words come with its exit
            try:
                await _loopback_configured(self.child)
                await self.net.attach(self.child)
            except OSError:
                if _alive(self.child):
                    raise  # not let go without its network and firewall
                # Its setup failed on its own (a mount): bubblewrap exits saying why.

    def went_up(self) -> bool:
        """Whether the wrapper inside ran: after the process has exited."""
        os.set_blocking(self.ready_r, False)
        with contextlib.suppress(OSError):
            return os.read(self.ready_r, 1) == b"1"
        return False

    async def close(self) -> None:
        for fd in (self.info_r, self.info_w, self.ready_r, self.ready_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.info_r = self.info_w = self.ready_r = self.ready_w = -1
        if self.net is not None:
            await self.net.close()


async def _loopback_configured(pid: int, timeout_s: float = 10.0) -> None:
    """Until bubblewrap's child has given its loopback 127.0.0.1. slirp4netns brings `lo` up as
    it attaches, and the kernel then adds that address itself: bubblewrap's own (exclusive) add
    would fail, and the sandbox with it. The address shows in the namespace's routing table."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        try:
            if "127.0.0.1" in Path(f"/proc/{pid}/net/fib_trie").read_text():
                return
        except OSError:
            return  # gone: bubblewrap exits saying why
        await asyncio.sleep(0.001)
    raise OSError("the sandbox's loopback was not set up in time")


def _alive(pid: int) -> bool:
    """Whether `pid` runs still (a zombie has exited: its namespaces are gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _read_all(fd: int) -> bytes:
    """Until the writer closes, or the JSON bubblewrap writes first is complete."""
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
        if _child_pid(data) is not None:
            break
    return data


def _child_pid(data: bytes) -> int | None:
    for line in data.decode(errors="replace").splitlines() or [data.decode(errors="replace")]:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            return int(json.loads(line)["child-pid"])
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return int(json.loads(data)["child-pid"])
    return None


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


_checked: dict[AgentNetwork, str | None] = {}


async def namespaces_problem(network: AgentNetwork) -> str | None:
    """None when bubblewrap can make the sandbox here (tried once per network kind)."""
    if network in _checked:
        return _checked[network]
    problem = await _try_namespaces(network)
    _checked[network] = problem
    return problem


async def _try_namespaces(network: AgentNetwork) -> str | None:
    if shutil.which(BWRAP) is None:
        return f"the worktree sandbox needs bubblewrap (Debian: apt-get install bubblewrap), {NO_ISOLATION_HINT}"
    if network is AgentNetwork.INTERNET and (missing := slirp.available()):
        return f"{missing}, {NO_ISOLATION_HINT}"
    here = Path(tempfile.gettempdir())
    # With a rule to set, as a run would: the firewall is part of the wall.
    launch = Launch(network, ["192.0.2.255"])
    try:
        argv = bwrap_argv(Mounts(here, []), network, ["true"], launch.info_w, launch.block_fd)
        res = await run_process(
            argv,
            cwd=here,
            env={"PATH": os.environ.get("PATH", os.defpath)},
            timeout_s=20,
            die_with_parent=False,
            pass_fds=launch.child_fds(),
            on_spawn=launch.started,
        )
    except OSError as exc:
        return f"the sandbox's network could not be set up ({exc}), {NO_ISOLATION_HINT}"
    finally:
        await launch.close()
    if not res.ok:
        why = " ".join(res.output.split())[-300:] or f"exit {res.exit_code}"
        return f"namespaces are not available here ({BWRAP}: {why}), {NO_ISOLATION_HINT}"
    return None
