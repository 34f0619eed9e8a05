"""verify_task: run the task's own verification commands in its worktree."""

from __future__ import annotations

from temporalio import activity

from activities.heartbeat import heartbeating
from backends.sandboxes.git_worktree import GitWorktreeSandbox
from backends.secrets import agent_env
from backends.verify import checks_passed, run_checks
from models.activity_io import VerifyIn, VerifyOut


class VerifyActivities:
    def __init__(self, sandbox: GitWorktreeSandbox) -> None:
        self.sandbox = sandbox

    @activity.defn(name="verify_task")
    async def verify_task(self, inp: VerifyIn) -> VerifyOut:
        workdir = self.sandbox.worktree_dir(inp.run_key, inp.task_id)
        repo_dir = self.sandbox.worktree_repo(inp.run_key, inp.task_id)
        async with heartbeating(f"verifying: {len(inp.commands)} command(s)"):
            results = await run_checks(
                workdir,
                inp.commands,
                timeout_s=inp.timeout_s,
                # A failure is compared with the same command on the base commit.
                base_dir_factory=lambda: self.sandbox.checkout_detached(repo_dir, inp.base_commit),
                env=agent_env(inp.env),
                writable=lambda d: self.sandbox.writable(inp.run_key, inp.task_id, d, inp.confine),
            )
        return VerifyOut(passed=checks_passed(results), checks=results)
