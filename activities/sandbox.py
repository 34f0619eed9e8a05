"""Activities that create and remove the pipeline's workspaces: the run's target, a task's sandbox."""

from __future__ import annotations

import contextlib

from temporalio import activity

from autonomous_pipeline.activities.heartbeat import heartbeating
from autonomous_pipeline.activities.sandboxing import sandbox_for
from autonomous_pipeline.backends.git import rev_parse
from autonomous_pipeline.backends.sandboxes.registry import Sandboxes
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.activity_io import (
    CleanupIn,
    CleanupOut,
    ConflictFixIn,
    ConflictFixOut,
    PrepareRunIn,
    PrepareRunOut,
    PrepareWorkspaceIn,
    PrepareWorkspaceOut,
)
from autonomous_pipeline.models.activity_refs import (
    CLEANUP_WORKSPACE,
    PREPARE_CONFLICT_FIX,
    PREPARE_RUN,
    PREPARE_WORKSPACE,
)
from autonomous_pipeline.models.sandbox import SandboxConfig


class SandboxActivities:
    def __init__(self, sandboxes: Sandboxes) -> None:
        self.sandboxes = sandboxes
        self.workspaces = sandboxes.workspaces

    @activity.defn(name=PREPARE_RUN.name)
    async def prepare_run(self, inp: PrepareRunIn) -> PrepareRunOut:
        """Clone or fetch the repository and make sure the target branch exists (idempotent)."""
        async with heartbeating(f"fetching {inp.repo}"):
            tip, created = await self.workspaces.prepare_run(
                inp.repo, inp.base_commit, inp.target_branch
            )
        return PrepareRunOut(target_commit=tip, created_target=created)

    @activity.defn(name=PREPARE_WORKSPACE.name)
    async def prepare_workspace(self, inp: PrepareWorkspaceIn) -> PrepareWorkspaceOut:
        return await self.prepare(inp)

    async def prepare(self, inp: PrepareWorkspaceIn) -> PrepareWorkspaceOut:
        """The task's worktree on this worker (prepare_workspace, and claim_workspace's)."""
        # Heartbeats, like every step of a task: a worker killed here is noticed in seconds, not
        # when the step's whole time limit has run out.
        task = TaskRef(inp.run_key, inp.task_id)
        sandbox = sandbox_for(self.sandboxes, inp.sandbox, inp.run_key)
        async with heartbeating(f"preparing the worktree of task {inp.task_id}"):
            base, _ = await sandbox.prepare(task, inp.repo, inp.target_branch, inp.fresh)
        clone = self.workspaces.layout.clone_dir(inp.repo)
        return PrepareWorkspaceOut(base_commit=base, branch=task.branch, clone=str(clone))

    async def discard(self, run_key: str, task_id: str, config: SandboxConfig) -> None:
        """Remove a task's worktree and refs from this worker (a claim that failed here)."""
        with contextlib.suppress(Exception):
            await self.sandboxes.get(config).destroy(TaskRef(run_key, task_id), True)

    @activity.defn(name=CLEANUP_WORKSPACE.name)
    async def cleanup_workspace(self, inp: CleanupIn) -> CleanupOut:
        task = TaskRef(inp.run_key, inp.task_id)
        # Cleanup is never refused: removing a sandbox weakens nothing.
        sandbox = self.sandboxes.get(inp.sandbox)
        async with heartbeating(f"removing the worktree of task {inp.task_id}"):
            removed, deleted = await sandbox.destroy(task, inp.delete_branch)
        out = CleanupOut(removed_worktree=removed, deleted_branch=deleted)
        if not inp.delete_branch and inp.repo is not None:
            clone = self.workspaces.layout.clone_dir(inp.repo)
            if clone.is_dir() and await rev_parse(f"refs/heads/{task.branch}", clone):
                out.kept_branch, out.clone = task.branch, str(clone)
        return out

    @activity.defn(name=PREPARE_CONFLICT_FIX.name)
    async def prepare_conflict_fix(self, inp: ConflictFixIn) -> ConflictFixOut:
        """The task's change applied onto the target's tip, conflict markers and all (idempotent).

        The next run_agent (a fix round naming the conflicts) resolves them in place, and its
        commit lands on the tip as one commit.
        """
        task = TaskRef(inp.run_key, inp.task_id)
        async with heartbeating(f"applying task {inp.task_id}'s change onto {inp.target_branch}"):
            tip, paths = await self.workspaces.prepare_conflict(
                task, inp.repo, inp.target_branch, inp.base_commit, inp.commit
            )
        return ConflictFixOut(base_commit=tip, conflict_paths=paths)
