"""The `dagger` sandbox: each step in a Dagger container, through the dagger-io SDK (extra `dagger`).

The same contract as the container sandbox, through an engine: the checkout is copied in,
the command runs, and the directories are exported back to the host, where the change is
collected as for every sandbox. `dagger_step` says what a step asks of the engine.

What this sandbox cannot do, and says so: a Dagger container always has the network (only
`--agent-network internet` is accepted), its output arrives when the step ends (the transcript is
written then; heartbeats go on meanwhile), and git metadata is not inside it.

No Dagger engine runs on the machines this project is tested on (its CLI and engine image are
downloaded from outside): preflight says when none is reachable, and the live tests skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any

from autonomous_pipeline.backends._proc import ProcResult
from autonomous_pipeline.backends.base import Exec, Role, View
from autonomous_pipeline.backends.sandboxes.common import GitSandbox
from autonomous_pipeline.backends.sandboxes.container_argv import HOME, TMPDIR, WORKDIR
from autonomous_pipeline.backends.sandboxes.dagger_step import DaggerStep, plan_step
from autonomous_pipeline.backends.secrets import redactor
from autonomous_pipeline.backends.workspace.checkout import Checkout
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.sandbox import AgentNetwork, SandboxKind

# How the SDK finds an engine without downloading one: a session it runs in, or the CLI.
_SESSION_ENV = ("DAGGER_SESSION_PORT", "_EXPERIMENTAL_DAGGER_RUNNER_HOST")
CONNECT_TIMEOUT_S = 30.0


def engine_problem() -> str | None:
    """None when a Dagger engine can be reached without a download; else what to do."""
    try:
        import dagger  # noqa: F401
    except ImportError:
        return (
            "the dagger sandbox needs the dagger-io SDK: pip install 'autonomous-pipeline[dagger]'"
        )
    if any(os.environ.get(n) for n in _SESSION_ENV) or shutil.which("dagger"):
        return None
    return (
        "no Dagger engine is reachable: install the dagger CLI (it starts the engine), or run "
        "the worker under `dagger run`; or use --sandbox container"
    )


class DaggerSandbox(GitSandbox):
    kind = SandboxKind.DAGGER

    def runner(self, task: TaskRef, checkout: Checkout, role: Role) -> DaggerRunner:
        return DaggerRunner(self, task, checkout, role)

    async def preflight(self) -> str | None:
        if self.config.container is None:
            return "the dagger sandbox needs an image: --container-image IMAGE"
        if self.config.network is not AgentNetwork.INTERNET:
            return (
                f"a Dagger container always has the network: --agent-network "
                f"{self.config.network.value} cannot be kept; pass --agent-network internet"
            )
        if problem := engine_problem():
            return problem
        return await _try_connect()


async def _try_connect() -> str | None:
    import dagger

    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            async with dagger.Connection(dagger.Config()) as client:
                await client.version()
    except Exception as exc:
        return f"the Dagger engine did not answer ({type(exc).__name__}: {exc})"
    return None


class DaggerRunner:
    host_programs = False

    def __init__(
        self, sandbox: DaggerSandbox, task: TaskRef, checkout: Checkout, role: Role
    ) -> None:
        self.sandbox, self.task = sandbox, task
        self.host = sandbox.host_view(task, checkout, role)
        self.inside = View(WORKDIR, TMPDIR, HOME)

    async def run(self, job: Exec) -> ProcResult:
        spec = self.sandbox.config.container
        if spec is None:
            raise OSError("the dagger sandbox has no image")
        step = plan_step(
            spec.image, spec.setup, self.host.workdir, self.host.tmp, self.host.home,
            dict(spec.env), sorted(job.env), job.argv, job.stdin,
        )  # fmt: skip
        started = time.monotonic()
        try:
            code, out = await asyncio.wait_for(_execute(step, job.env), job.timeout_s)
            timed_out = False
        except TimeoutError:
            # Leaving the connection ends the session, and the engine cancels the exec with it.
            code, out, timed_out = None, "", True
        out = redactor(job.env)(out)
        if job.transcript is not None:
            with job.transcript.open("a", encoding="utf-8") as fh:
                fh.write(out)
        for line in out.splitlines():
            if job.on_line is not None:
                job.on_line(line)
        return ProcResult(
            argv=tuple(job.argv),
            exit_code=code,
            timed_out=timed_out,
            output=out[-job.tail_chars :],
            duration_s=time.monotonic() - started,
        )


async def _execute(step: DaggerStep, environ: dict[str, str]) -> tuple[int, str]:
    """Run `step` on the engine; export its directories back. (exit code, stdout + stderr)."""
    import dagger

    async with dagger.Connection(dagger.Config()) as client:
        ctr: Any = client.container().from_(step.image)
        for command in step.setup:
            ctr = ctr.with_exec(["sh", "-c", command])
        for mount in step.mounts:
            source = client.host().directory(str(mount.host), exclude=list(mount.exclude))
            ctr = ctr.with_directory(str(mount.inside), source)
        for key, value in step.env.items():
            ctr = ctr.with_env_variable(key, value)
        for name in step.secrets:
            if name in environ:
                ctr = ctr.with_secret_variable(name, client.set_secret(name, environ[name]))
        ctr = ctr.with_workdir(str(step.workdir)).with_exec(
            step.argv, stdin=step.stdin or "", expect=dagger.ReturnType.ANY
        )
        ctr = await ctr.sync()
        code = await ctr.exit_code()
        out = await ctr.stdout() + await ctr.stderr()
        for mount in step.exports:
            await _export(ctr.directory(str(mount.inside)), mount.host, mount.exclude)
        return code, out


async def _export(directory: Any, host: Path, keep: tuple[str, ...]) -> None:
    """Make `host` what `directory` holds (deletions too), keeping the host's own `keep` names."""
    staging = host.parent / f".{host.name}.dagger-{uuid.uuid4().hex[:8]}"
    await directory.export(str(staging), wipe=True)
    try:
        await asyncio.to_thread(_mirror, staging, host, keep)
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)


def _is_real_dir(path: Path) -> bool:
    """A directory, not a link to one: the host never follows a link the container made."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _drop(path: Path) -> None:
    """Remove `path` itself (a link is removed, never what it points to)."""
    if _is_real_dir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _mirror(source: Path, target: Path, keep: tuple[str, ...]) -> None:
    """Make `target` hold what `source` holds. Nothing is followed on either side: a link in
    `target` (the agent's, left there by an earlier step) is replaced, never written through."""
    names = {entry.name for entry in os.scandir(source)}
    for entry in os.scandir(target):
        if entry.name not in keep and entry.name not in names:
            _drop(Path(entry.path))
    for name in sorted(names):
        src, dest = source / name, target / name
        if _is_real_dir(src):
            if not _is_real_dir(dest):
                _drop(dest)
                dest.mkdir()
            _mirror(src, dest, ())
        else:
            if _is_real_dir(dest):
                shutil.rmtree(dest)
            os.replace(src, dest)  # a link in dest is replaced by rename, not followed
