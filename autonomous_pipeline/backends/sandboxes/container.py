"""The `container` sandbox: every step of a task in an OCI container, through the podman or docker
CLI (`container_argv` says what the container gets).

Timeouts and cancellation end the CLI and then remove the container by name; a worker killed
outright cannot, so every container is recorded (its name, in the workspace, before it starts)
and carries labels naming its task, its workspace and its worker: the task's next attempt removes
what its record names (`reap`: no listing of containers, which waits on the engine's locks), a
worker starting on the workspace removes what dead workers left by label (`sweep`), and podman's
own `--timeout` ends a container that nobody is left to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import shlex
import shutil
import socket
import uuid
from pathlib import Path

from autonomous_pipeline.backends._proc import ProcResult, run_process, start_time
from autonomous_pipeline.backends.base import Exec, Role, SandboxError, View
from autonomous_pipeline.backends.git import repo_lock
from autonomous_pipeline.backends.sandboxes import slirp
from autonomous_pipeline.backends.sandboxes.common import GitSandbox
from autonomous_pipeline.backends.sandboxes.container_argv import (
    HARDENING,
    HOME,
    TASK_LABEL,
    TMPDIR,
    WORKDIR,
    WORKER_LABEL,
    WORKSPACE_LABEL,
    ContainerStep,
    network_args,
    own_namespace,
    run_argv,
)
from autonomous_pipeline.backends.workspace.checkout import Checkout
from autonomous_pipeline.backends.workspace.clones import Clones
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.models.sandbox import (
    ContainerRuntime,
    ContainerSpec,
    SandboxConfig,
    SandboxKind,
)

RUN_ARGS_SETTING = "PIPELINE_CONTAINER_RUN_ARGS"
# What `podman run` and `docker run` exit with when the failure is theirs, not the command's.
ENGINE_FAILED = 125
# What the container CLI itself needs of the worker's environment.
_CLI_ENV = ("PATH", "HOME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
            "DOCKER_HOST", "DOCKER_CONFIG", "CONTAINER_HOST", "CONTAINERS_CONF",
            "CONTAINERS_STORAGE_CONF", "TMPDIR")  # fmt: skip
_QUICK_S = 120.0


def worker_label() -> str:
    """This worker, as a container's label names it: host, pid and the pid's start time."""
    return f"{socket.gethostname()}/{os.getpid()}/{start_time(os.getpid())}"


def worker_alive(label: str) -> bool:
    host, _, rest = label.partition("/")
    pid, _, started = rest.partition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's worker: not ours to judge
    return start_time(int(pid)) == started and started != ""


def run_args(environ: os._Environ[str] | dict[str, str] | None = None) -> list[str]:
    """Extra `run` flags for unusual hosts (another OCI runtime, rlimits), shell-split."""
    environ = os.environ if environ is None else environ
    return shlex.split(environ.get(RUN_ARGS_SETTING, ""))


def runtime_binary(runtime: ContainerRuntime) -> str | None:
    return shutil.which(runtime.value)


class ContainerSandbox(GitSandbox):
    kind = SandboxKind.CONTAINER

    @property
    def spec(self) -> ContainerSpec:
        if self.config.container is None:
            raise OSError("the container sandbox has no image: the run names none")
        return self.config.container

    @property
    def binary(self) -> str:
        found = runtime_binary(self.spec.runtime)
        if found is None:
            raise OSError(f"{self.spec.runtime.value} is not installed on this worker")
        return found

    def workspace_label(self) -> str:
        return hashlib.sha256(str(self.layout.root).encode()).hexdigest()[:16]

    def runner(self, task: TaskRef, checkout: Checkout, role: Role) -> ContainerRunner:
        return ContainerRunner(self, task, checkout, role)

    async def cli(self, *args: str, timeout_s: float = _QUICK_S) -> ProcResult:
        """The container CLI, for bookkeeping (never a step of the task)."""
        return await run_process(
            [self.binary, *args],
            cwd=self.layout.root if self.layout.root.is_dir() else Path("/"),
            env=cli_env(),
            timeout_s=timeout_s,
            die_with_parent=False,
        )

    async def preflight(self) -> str | None:
        try:
            spec, binary = self.spec, self.binary
        except OSError as exc:
            return f"{exc} (--container-runtime podman|docker, or install one)"
        found = await self._inspect(spec.image)
        if not found.ok:
            # The CLI's own words say whether the image is missing or the engine unreachable.
            said = " ".join(found.output.split())[-300:]
            return (
                f"image {spec.image!r} is not available to {spec.runtime.value} "
                f"({binary} image ls){': ' + said if said else ''}; build, import or pull it first"
            )
        if own_namespace(spec.runtime, self.config.network, os.getuid()):
            return slirp.available()  # its network is the worker's own, firewalled
        return None

    async def _inspect(self, image: str) -> ProcResult:
        return await self.cli("image", "inspect", "--format", "{{.Id}}", image)

    async def image_present(self, image: str) -> bool:
        return (await self._inspect(image)).ok

    async def image(self) -> str:
        """The image steps run from: the spec's, or one made from it by the setup commands
        (kept per base image id and commands: a rebuilt base is set up again)."""
        spec = self.spec
        if not spec.setup:
            return spec.image
        found = await self._inspect(spec.image)
        if not found.ok:
            raise SandboxError(f"image {spec.image!r} is not available to {spec.runtime.value}")
        base_id = found.output.strip()
        digest = hashlib.sha256("\0".join([base_id, *spec.setup]).encode()).hexdigest()[:16]
        tag = f"localhost/autonomous-pipeline-env:{digest}"
        lock = self.layout.sandbox_dir() / f"image-{digest}.lock"
        async with repo_lock(lock):
            if await self.image_present(tag):
                return tag
            name = f"ap-setup-{digest}-{uuid.uuid4().hex[:6]}"
            script = "set -e\n" + "\n".join(spec.setup)
            labels = [f"--label={WORKSPACE_LABEL}={self.workspace_label()}",
                      f"--label={WORKER_LABEL}={worker_label()}"]  # fmt: skip
            async with contextlib.AsyncExitStack() as stack:
                # The repository's setup commands get the steps' network, firewall included.
                netns = await self.namespace(stack)
                network = network_args(spec.runtime, self.config.network, netns)
                made = await self.cli(
                    "run", "--pull=never", "--name", name, *network, *labels, *HARDENING,
                    *run_args(), spec.image, "sh", "-c", script,
                    timeout_s=3600,
                )  # fmt: skip
            try:
                if not made.ok:
                    raise SandboxError(f"the image's setup failed (exit {made.exit_code}): "
                                       f"{made.output[-1500:]}")  # fmt: skip
                committed = await self.cli("commit", name, tag)
                if not committed.ok:
                    raise SandboxError(
                        f"could not keep the set-up image: {committed.output[-500:]}"
                    )
            finally:
                await self.cli("rm", "-f", name)
        return tag

    async def namespace(self, stack: contextlib.AsyncExitStack) -> Path | None:
        """The firewalled network namespace a container joins, held until `stack` closes;
        None where the engine's own network is used (container_argv.own_namespace)."""
        if not own_namespace(self.spec.runtime, self.config.network, os.getuid()):
            return None
        try:
            return await stack.enter_async_context(slirp.namespace(self.refused))
        except OSError as exc:
            raise SandboxError(f"the container's network could not be set up: {exc}") from exc

    async def remove(self, *names: str) -> None:
        if names:
            # podman refuses the whole list when one of them is gone already; docker goes on.
            ignore = ["--ignore"] if self.spec.runtime is ContainerRuntime.PODMAN else []
            await self.cli("rm", "-f", "-t", "0", *ignore, *names)

    async def _labelled(self, label: str, value: str) -> list[tuple[str, str]]:
        listing = await self.cli(
            "ps", "-a", "--filter", f"label={label}={value}",
            "--format", f'{{{{.ID}}}}\t{{{{index .Labels "{WORKER_LABEL}"}}}}',
        )  # fmt: skip
        if not listing.ok:  # no engine behind the CLI (docker without its daemon): nothing ours
            return []
        rows = [line.split("\t", 1) for line in listing.output.splitlines() if line.strip()]
        return [(row[0], row[1] if len(row) > 1 else "") for row in rows]

    async def reap(self, task: TaskRef) -> int:
        killed = await super().reap(task)
        records = sorted(self.layout.procs_dir(task).glob("*.container"))
        if records and self.config.container is not None and runtime_binary(self.spec.runtime):
            await self.remove(*(r.stem for r in records))
        for record in records:
            record.unlink(missing_ok=True)
        return killed + len(records)

    async def sweep(self) -> int:
        """Remove the containers that dead workers of this workspace left behind."""
        rows = await self._labelled(WORKSPACE_LABEL, self.workspace_label())
        dead = [cid for cid, worker in rows if not worker_alive(worker)]
        await self.remove(*dead)
        return len(dead)


def cli_env(values: dict[str, str] | None = None) -> dict[str, str]:
    """The container CLI's environment: what it needs, and the values the step forwards."""
    env = {k: os.environ[k] for k in _CLI_ENV if k in os.environ}
    return {**env, **(values or {})}


class ContainerRunner:
    host_programs = False  # the image's programs, not the worker's

    def __init__(
        self, sandbox: ContainerSandbox, task: TaskRef, checkout: Checkout, role: Role
    ) -> None:
        self.sandbox, self.task, self.checkout = sandbox, task, checkout
        self.host = sandbox.host_view(task, checkout, role)
        self.inside = View(WORKDIR, TMPDIR, HOME)

    def _step(self, image: str, job: Exec) -> ContainerStep:
        sandbox, spec = self.sandbox, self.sandbox.spec
        key = hashlib.sha256(str(self.task).encode()).hexdigest()[:10]
        return ContainerStep(
            runtime=spec.runtime,
            binary=sandbox.binary,
            image=image,
            name=f"ap-{key}-{uuid.uuid4().hex[:8]}",
            checkout=self.host.workdir,
            tmp=self.host.tmp,
            home=self.host.home,
            clone=self.checkout.clone,
            clone_config=Clones.sandbox_config(self.checkout.clone),
            network=sandbox.config.network,
            labels={
                TASK_LABEL: str(self.task),
                WORKSPACE_LABEL: sandbox.workspace_label(),
                WORKER_LABEL: worker_label(),
            },
            env_names=sorted(job.env),
            env_values=dict(spec.env),
            stdin=job.stdin is not None,
            uid=os.getuid(),
            gid=os.getgid(),
            timeout_s=job.timeout_s,
            extra=run_args(),
        )

    async def run(self, job: Exec) -> ProcResult:
        step = self._step(await self.sandbox.image(), job)
        async with contextlib.AsyncExitStack() as stack:
            netns = await self.sandbox.namespace(stack)
            return await self._run(dataclasses.replace(step, netns=netns), job)

    async def _run(self, step: ContainerStep, job: Exec) -> ProcResult:
        # Named before it exists: a worker killed now leaves a record the next attempt reads.
        record = self.sandbox.layout.procs_dir(self.task) / f"{step.name}.container"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.touch()
        finished = False
        try:
            res = await run_process(
                run_argv(step, job.argv),
                cwd=self.host.workdir,
                env=cli_env(job.env),
                timeout_s=job.timeout_s,
                stdin=job.stdin,
                transcript=job.transcript,
                on_line=job.on_line,
                tail_chars=job.tail_chars,
                record=self.sandbox.record(self.task),
            )
            finished = not res.timed_out
        finally:
            if finished:
                record.unlink(missing_ok=True)
            else:
                # Ending the CLI does not end the container: it is removed by name, and the
                # record goes only once it is gone (a later reap tries again otherwise).
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.sandbox.remove(step.name))
                    record.unlink(missing_ok=True)
        if res.exit_code == ENGINE_FAILED:
            # The engine's own failure (no such image, a runtime that cannot start it): no
            # command ran, so none failed, nor passed.
            said = " ".join(res.output.split())[-500:]
            raise SandboxError(f"{step.runtime.value} could not run the step: {said}")
        return res


async def sweep_workspace(workspaces: Workspaces) -> int:
    """At a worker's start: remove what dead workers of this workspace left running, with
    every container CLI this machine has."""
    removed = 0
    for runtime in ContainerRuntime:
        if runtime_binary(runtime) is None:
            continue
        spec = ContainerSpec(image="", runtime=runtime)
        config = SandboxConfig(kind=SandboxKind.CONTAINER, container=spec)
        with contextlib.suppress(OSError):
            removed += await ContainerSandbox(workspaces, config).sweep()
    return removed
