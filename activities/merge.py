"""merge_task: rebase onto the target's tip and publish it with a compare-and-swap push."""

from __future__ import annotations

from temporalio import activity

from activities.heartbeat import heartbeating
from backends.merge import merge_task
from backends.sandboxes.git_worktree import GitWorktreeSandbox
from backends.secrets import agent_env
from models.activity_io import MergeIn, MergeOut


class MergeActivities:
    def __init__(self, sandbox: GitWorktreeSandbox) -> None:
        self.sandbox = sandbox

    @activity.defn(name="merge_task")
    async def merge_task(self, inp: MergeIn) -> MergeOut:
        async with heartbeating(f"merging into {inp.target_branch}") as note:
            return await merge_task(
                self.sandbox,
                run_key=inp.run_key,
                task_id=inp.task_id,
                repo=inp.repo,
                target_branch=inp.target_branch,
                base_commit=inp.base_commit,
                commit=inp.commit,
                commands=inp.commands,
                verify_timeout_s=inp.verify_timeout_s,
                attempts=inp.attempts,
                heartbeat=note,
                env=agent_env(inp.env),
                writable=lambda d: self.sandbox.writable(inp.run_key, inp.task_id, d, inp.confine),
            )
