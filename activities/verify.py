"""verify_task: run the task's own verification commands in its sandbox."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

from autonomous_pipeline.activities.heartbeat import heartbeating
from autonomous_pipeline.activities.sandboxing import sandbox_failures, sandbox_for
from autonomous_pipeline.backends.base import Role, Runner, SandboxBackend
from autonomous_pipeline.backends.git import GitError
from autonomous_pipeline.backends.sandboxes.registry import Sandboxes
from autonomous_pipeline.backends.secrets import agent_env
from autonomous_pipeline.backends.verify import checks_passed, run_checks
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.models.activity_io import VerifyIn, VerifyOut
from autonomous_pipeline.models.activity_refs import VERIFY_TASK


def base_runner(
    workspaces: Workspaces, sandbox: SandboxBackend, task: TaskRef, commit: str
) -> contextlib.AbstractAsyncContextManager[Runner]:
    """A runner in a throwaway checkout of `commit`, for a check that failed on the task."""

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[Runner]:
        async with workspaces.detached(task, commit) as co:
            yield sandbox.runner(task, co, Role.CHECK)

    return opened()


class VerifyActivities:
    def __init__(self, sandboxes: Sandboxes) -> None:
        self.sandboxes = sandboxes

    @activity.defn(name=VERIFY_TASK.name)
    async def verify_task(self, inp: VerifyIn) -> VerifyOut:
        task = TaskRef(inp.run_key, inp.task_id)
        sandbox = sandbox_for(self.sandboxes, inp.sandbox, inp.run_key)
        workspaces = self.sandboxes.workspaces
        co = await workspaces.checkout(task)
        if co is None:
            raise GitError(f"task {inp.task_id} has no intact worktree to verify")
        async with heartbeating(f"verifying: {len(inp.commands)} command(s)"):
            await sandbox.reap(task)
            async with sandbox_failures():  # a check that never ran has not failed
                results = await run_checks(
                    sandbox.runner(task, co, Role.CHECK),
                    inp.commands,
                    timeout_s=inp.timeout_s,
                    env=agent_env(inp.env),
                    # A failure is compared with the same command on the base commit.
                    base=lambda: base_runner(workspaces, sandbox, task, inp.base_commit),
                )
        return VerifyOut(passed=checks_passed(results), checks=results)
