"""What every sandbox shares: the task's checkout (host-side git), its private folders, and
the records of what runs for it, so that a dead attempt's leftovers can be killed."""

from __future__ import annotations

import functools
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from autonomous_pipeline.backends._proc import kill_recorded_group
from autonomous_pipeline.backends.base import Role, Runner, View
from autonomous_pipeline.backends.sandboxes import slirp
from autonomous_pipeline.backends.workspace.checkout import Checkout
from autonomous_pipeline.backends.workspace.collect import Committed
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.models.sandbox import SandboxConfig, SandboxKind


class GitSandbox(ABC):
    """The parts of `SandboxBackend` that are git bookkeeping: the same for every sandbox."""

    kind: SandboxKind

    @abstractmethod
    def runner(self, task: TaskRef, checkout: Checkout, role: Role) -> Runner: ...

    @abstractmethod
    async def preflight(self) -> str | None: ...

    def __init__(
        self, workspaces: Workspaces, config: SandboxConfig, control_plane: tuple[str, ...] = ()
    ) -> None:
        self.workspaces = workspaces
        self.layout = workspaces.layout
        self.config = config
        # Hosts of the worker's Temporal frontend: out of every sandbox's reach.
        self.control_plane = control_plane

    @functools.cached_property
    def _control_plane_addresses(self) -> list[str]:
        return slirp.resolve(list(self.control_plane))

    @property
    def refused(self) -> list[str]:
        """What `internet` must not reach: this machine's own addresses (read for each step:
        an interface that came up since counts), the frontend's, the cloud's metadata
        services."""
        own = {*slirp.host_addresses(), *self._control_plane_addresses}
        return [*sorted(own), *slirp.ALWAYS_REFUSED]

    async def prepare(
        self, task: TaskRef, repo: str, target_branch: str, fresh: bool = False
    ) -> tuple[str, Checkout]:
        return await self.workspaces.prepare(task, repo, target_branch, fresh)

    async def reset(self, task: TaskRef, commit: str) -> Checkout:
        return await self.workspaces.reset(task, commit)

    async def collect(
        self, task: TaskRef, base_commit: str, message: str, named: list[str]
    ) -> Committed:
        return await self.workspaces.collect(task, base_commit, message, named)

    async def reap(self, task: TaskRef) -> int:
        folder = self.layout.procs_dir(task)
        return sum(kill_recorded_group(record) for record in sorted(folder.glob("*.pid")))

    async def destroy(self, task: TaskRef, delete_branch: bool) -> tuple[bool, bool]:
        await self.reap(task)
        return await self.workspaces.remove(task, delete_branch)

    def host_view(self, task: TaskRef, checkout: Checkout, role: Role) -> View:
        """The agent's own TMPDIR and HOME (kept: its sessions), or fresh ones for a check or a
        reviewer (removed with the task)."""
        if role is Role.AGENT:
            tmp, home = self.layout.tmp_dir(task), self.layout.home_dir(task)
        else:
            step = self.layout.steps_dir(task) / f"{role.value}-{uuid.uuid4().hex[:8]}"
            tmp, home = step / "tmp", step / "home"
        for folder in (tmp, home):
            folder.mkdir(parents=True, exist_ok=True)
        return View(workdir=checkout.path, tmp=tmp, home=home)

    def record(self, task: TaskRef) -> Path:
        """Where one process of the task is recorded while it runs."""
        return self.layout.procs_dir(task) / f"{uuid.uuid4().hex[:12]}.pid"
