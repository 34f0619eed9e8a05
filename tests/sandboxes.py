"""Sandboxes for tests: the product's own, on a test's workspace."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, cast

import pytest

from autonomous_pipeline.activities.verify import (
    base_runner as base_runner,  # the product's, for tests
)
from autonomous_pipeline.backends._proc import ProcResult, run_process
from autonomous_pipeline.backends.base import (
    AgentOutcome,
    AgentRequest,
    Exec,
    Role,
    Runner,
    SandboxBackend,
    View,
)
from autonomous_pipeline.backends.sandboxes.registry import Sandboxes
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.models.sandbox import AgentNetwork, SandboxConfig
from tests.images import in_ci

# The host view without namespaces or Landlock: for tests that are not about the boundary.
PLAIN = SandboxConfig(isolation=False, confine=False)
ISOLATED = SandboxConfig(isolation=True, confine=True, network=AgentNetwork.NONE)

# Skipped where bubblewrap is missing, but not in CI (where .ci/run installs it): there the
# tests run and fail.
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None and not in_ci(),
    reason="bubblewrap is not installed (apt-get install bubblewrap)",
)


def sandboxes(workspace: Path | Workspaces) -> Sandboxes:
    ws = workspace if isinstance(workspace, Workspaces) else Workspaces(workspace)
    return Sandboxes(ws)


def sandbox(workspace: Path | Workspaces, config: SandboxConfig = PLAIN) -> SandboxBackend:
    return sandboxes(workspace).get(config)


async def runner_of(workspaces: Workspaces, task: TaskRef, config: SandboxConfig = PLAIN) -> Runner:
    """A runner in the task's checkout, which must exist."""
    co = await workspaces.checkout(task)
    assert co is not None, f"task {task} has no checkout"
    return sandboxes(workspaces).get(config).runner(task, co, Role.AGENT)


class HostRunner:
    """A runner with no sandbox at all, for tests of what a backend does with any runner."""

    host_programs = True

    def __init__(self, workdir: Path, tmp: Path | None = None) -> None:
        tmp = tmp or workdir.parent / f"{workdir.name}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        self.host = self.inside = View(workdir, tmp, tmp)
        self.jobs: list[Exec] = []

    async def run(self, job: Exec) -> ProcResult:
        self.jobs.append(job)
        return await run_process(
            job.argv,
            cwd=self.host.workdir,
            env=job.env,
            timeout_s=job.timeout_s,
            stdin=job.stdin,
            transcript=job.transcript,
            on_line=job.on_line,
            tail_chars=job.tail_chars,
        )


def host_runner(request: AgentRequest) -> HostRunner:
    return HostRunner(request.workdir)


async def run_with(agent: Any, request: AgentRequest, heartbeat: Any, **kw: Any) -> AgentOutcome:
    """`agent.run` with a runner on the host, in the request's worktree."""
    return cast(AgentOutcome, await agent.run(request, heartbeat, host_runner(request), **kw))
