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

import functools
import logging
import os
import sys
import tempfile
from pathlib import Path

from backends import confine
from backends._proc import SPAWN, ProcResult, check_executable, run_process
from backends.base import Exec, View
from backends.sandboxes import slirp
from backends.sandboxes.bwrap import BWRAP, Mounts, bwrap_argv
from backends.sandboxes.common import GitSandbox
from backends.sandboxes.hidden import hidden_paths, origin_url
from backends.workspace.checkout import Checkout
from backends.workspace.clones import Clones
from backends.workspace.layout import TaskRef
from models.sandbox import AgentNetwork, SandboxKind

log = logging.getLogger(__name__)
SHM = Path("/dev/shm")


class WorktreeSandbox(GitSandbox):
    kind = SandboxKind.WORKTREE

    def runner(self, task: TaskRef, checkout: Checkout) -> WorktreeRunner:
        return WorktreeRunner(self, task, checkout)

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

    def __init__(self, sandbox: WorktreeSandbox, task: TaskRef, checkout: Checkout) -> None:
        self.sandbox, self.task, self.checkout = sandbox, task, checkout
        self.host = sandbox.host_view(task, checkout)
        isolated = sandbox.config.isolation
        # Without namespaces HOME stays the worker's: a CLI's login lives there.
        home = self.host.home if isolated else Path(os.environ.get("HOME") or Path.home())
        self.inside = View(self.host.workdir, self.host.tmp, home)

    def _writable(self) -> list[Path]:
        own = [self.host.workdir, self.host.tmp]
        if self.sandbox.config.isolation:
            # Its HOME, and its own /dev/shm (a tmpfs of the sandbox's: semaphores, shared
            # memory; multiprocessing and test runners need it).
            own += [self.host.home, SHM]
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
        # Raised here as exec would, so a missing agent is reported as such, not as bwrap's exit.
        check_executable(job.argv[0], self.host.workdir, env)
        command = list(job.argv)
        if landlock is not None:
            wrapper = [sys.executable, "-I", "-S", str(SPAWN), "--confine"]
            for path in landlock:
                wrapper += ["--writable", str(path)]
            command = [*wrapper, "--", *command]
        net = slirp.Internet() if cfg.network is AgentNetwork.INTERNET else None
        mounts = self._mounts(writable, net is not None)
        fds = net.child_fds() if net is not None else (None, None)
        argv = bwrap_argv(mounts, cfg.network, command, *fds)
        try:
            return await run_process(
                argv,
                die_with_parent=False,  # bwrap's --die-with-parent does it
                pass_fds=[fd for fd in fds if fd is not None],
                on_spawn=net.attach if net is not None else None,
                **common,  # type: ignore[arg-type]
            )
        finally:
            if net is not None:
                await net.close()

    def _mounts(self, writable: list[Path], internet: bool) -> Mounts:
        clone = self.checkout.clone
        hidden = hidden_paths(
            self.sandbox.layout.root,
            origin_url(clone),
            Path(os.environ.get("HOME") or Path.home()),
            hide_run=self.sandbox.config.network is not AgentNetwork.HOST,
        )
        # The clone, so that git works in the checkout, with a config that names no remote.
        readonly = [(clone, clone), (Clones.sandbox_config(clone), clone / "config")]
        if internet:
            readonly.append((self.sandbox.resolv_conf(), Path("/etc/resolv.conf")))
        # /dev/shm is a tmpfs of the sandbox's own (bwrap_argv): never the host's, bound.
        existing = [p for p in writable if p.exists() and p != SHM]
        return Mounts(self.host.workdir, existing, hidden.dirs, hidden.files, readonly)


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
    hint = (
        "or pass --no-isolation to run agents without namespaces (they can then read what the "
        "worker can read, signal its processes and reach its network)"
    )
    if network is AgentNetwork.INTERNET and (missing := slirp.available()):
        return f"{missing}, {hint}"
    here = Path(tempfile.gettempdir())
    net = slirp.Internet() if network is AgentNetwork.INTERNET else None
    fds = net.child_fds() if net is not None else (None, None)
    argv = bwrap_argv(Mounts(here, []), network, ["true"], *fds)
    try:
        res = await run_process(
            argv,
            cwd=here,
            env={"PATH": os.environ.get("PATH", os.defpath)},
            timeout_s=20,
            die_with_parent=False,
            pass_fds=[fd for fd in fds if fd is not None],
            on_spawn=net.attach if net is not None else None,
        )
    except FileNotFoundError:
        return f"the worktree sandbox needs bubblewrap (Debian: apt-get install bubblewrap), {hint}"
    except OSError as exc:
        return f"the sandbox's network could not be set up ({exc}), {hint}"
    finally:
        if net is not None:
            await net.close()
    if not res.ok:
        why = " ".join(res.output.split())[-300:] or f"exit {res.exit_code}"
        return f"namespaces are not available here ({BWRAP}: {why}), {hint}"
    return None
