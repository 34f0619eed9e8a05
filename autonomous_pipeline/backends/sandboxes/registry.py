"""The sandbox backends of a worker: one per configuration, all sharing its workspaces."""

from __future__ import annotations

from autonomous_pipeline.backends.base import SandboxBackend
from autonomous_pipeline.backends.sandboxes.common import GitSandbox
from autonomous_pipeline.backends.sandboxes.policy import WorkerPolicy
from autonomous_pipeline.backends.sandboxes.worktree import WorktreeSandbox
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.models.sandbox import SandboxConfig, SandboxKind


class Sandboxes:
    def __init__(
        self,
        workspaces: Workspaces,
        policy: WorkerPolicy | None = None,
        control_plane: tuple[str, ...] = (),
    ) -> None:
        self.workspaces = workspaces
        self.policy = policy or WorkerPolicy()
        self.control_plane = control_plane  # the frontend's hosts: never reachable from a sandbox
        self._made: dict[str, SandboxBackend] = {}

    def get(self, config: SandboxConfig) -> SandboxBackend:
        key = config.model_dump_json()
        if key not in self._made:
            self._made[key] = self._make(config)
        return self._made[key]

    def _make(self, config: SandboxConfig) -> GitSandbox:
        if config.kind is SandboxKind.CONTAINER:
            from autonomous_pipeline.backends.sandboxes.container import ContainerSandbox

            return ContainerSandbox(self.workspaces, config, self.control_plane)
        if config.kind is SandboxKind.DAGGER:
            from autonomous_pipeline.backends.sandboxes.dagger import DaggerSandbox

            return DaggerSandbox(self.workspaces, config, self.control_plane)
        return WorktreeSandbox(self.workspaces, config, self.control_plane)
