"""Which sandbox a task's processes run in, and how it is set up. Recorded in history."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from autonomous_pipeline.models.plan import Plan, Task


class SandboxKind(StrEnum):
    WORKTREE = "worktree"  # a git worktree on the worker, in its own namespaces (bubblewrap)
    CONTAINER = "container"  # an OCI container per step, through the podman or docker CLI
    DAGGER = "dagger"  # a Dagger container, through the dagger-io SDK


# What a batch's `**Execution Mode:**` names, and the sandbox it means.
EXECUTION_MODES: dict[str, SandboxKind] = {
    "local": SandboxKind.WORKTREE,
    "worktree": SandboxKind.WORKTREE,
    "container": SandboxKind.CONTAINER,
    "docker": SandboxKind.CONTAINER,
    "podman": SandboxKind.CONTAINER,
    "dagger": SandboxKind.DAGGER,
}


class AgentNetwork(StrEnum):
    NONE = "none"  # loopback of its own only
    INTERNET = "internet"  # the outside world, never the host's loopback or the control plane
    HOST = "host"  # the worker's own network: weakens isolation, only from the command line


class ContainerRuntime(StrEnum):
    PODMAN = "podman"
    DOCKER = "docker"


class ContainerSpec(BaseModel):
    """The image a task's container (or Dagger container) runs, and what is set up in it."""

    image: str
    runtime: ContainerRuntime = ContainerRuntime.PODMAN
    # Commands run once in the image (without the repository); the result is kept as a local
    # image, so every step starts from it.
    setup: list[str] = Field(default_factory=list)
    # Literal values set in the container: a repository's file may set them, never a host
    # variable's value (those come only from --agent-env).
    env: dict[str, str] = Field(default_factory=dict)
    # A claude CLI inside the image (the host's is not there).
    claude_bin: str | None = None


class SandboxConfig(BaseModel):
    kind: SandboxKind = SandboxKind.WORKTREE
    network: AgentNetwork = AgentNetwork.NONE
    # Namespaces around the worktree sandbox; False (--no-isolation) leaves only Landlock.
    isolation: bool = True
    # Landlock: writes only beneath the checkout, the task's TMPDIR and HOME, inside or not.
    confine: bool = True
    container: ContainerSpec | None = None
    # The operator's signature on what this sandbox weakens (backends.sandboxes.policy); None
    # for a sandbox that weakens nothing.
    grant: str | None = None

    @property
    def isolated(self) -> bool:
        """The agent runs behind a wall of its own: namespaces or a container."""
        return self.kind is not SandboxKind.WORKTREE or self.isolation


def sandbox_for_mode(mode: str) -> SandboxKind | None:
    """The sandbox an execution mode names; None for a mode nobody knows."""
    return EXECUTION_MODES.get(mode.lower())


def sandbox_of(plan: Plan, task: Task, run: SandboxConfig) -> SandboxConfig:
    """The run's sandbox, of the kind the task's batch runs in."""
    for batch in plan.batches:
        if batch.id == task.batch_id:
            if batch.sandbox is not None and batch.sandbox is not run.kind:
                return run.model_copy(update={"kind": batch.sandbox})
            break
    return run
