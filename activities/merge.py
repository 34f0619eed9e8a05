"""merge_task: rebase onto the target's tip and publish it with a compare-and-swap push.
finish_task: the task's checks, that merge and its cleanup, as one step."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import activity

from autonomous_pipeline.activities.heartbeat import heartbeating
from autonomous_pipeline.activities.sandboxing import sandbox_failures, sandbox_for
from autonomous_pipeline.activities.verify import base_runner
from autonomous_pipeline.backends._proc import background
from autonomous_pipeline.backends.finish import finish_task
from autonomous_pipeline.backends.merge import MergeJob, merge_task
from autonomous_pipeline.backends.sandboxes.registry import Sandboxes
from autonomous_pipeline.backends.secrets import agent_env
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.activity_io import FinishOut, MergeIn, MergeOut
from autonomous_pipeline.models.activity_refs import FINISH_TASK, MERGE_TASK


class MergeActivities:
    def __init__(self, sandboxes: Sandboxes) -> None:
        self.sandboxes = sandboxes

    def _job(self, inp: MergeIn, note: Callable[[str], None]) -> MergeJob:
        task = TaskRef(inp.run_key, inp.task_id)
        sandbox = sandbox_for(self.sandboxes, inp.sandbox, inp.run_key)
        workspaces = self.sandboxes.workspaces
        return MergeJob(
            workspaces=workspaces,
            sandbox=sandbox,
            task=task,
            repo=inp.repo,
            target_branch=inp.target_branch,
            base_commit=inp.base_commit,
            commit=inp.commit,
            commands=inp.commands,
            verify_timeout_s=inp.verify_timeout_s,
            env=agent_env(inp.env),
            base_runner=lambda tip: lambda: base_runner(workspaces, sandbox, task, tip),
            beat=note,
        )

    @activity.defn(name=MERGE_TASK.name)
    async def merge_task(self, inp: MergeIn) -> MergeOut:
        async with heartbeating(f"merging into {inp.target_branch}") as note, sandbox_failures():
            return await merge_task(self._job(inp, note), inp.attempts)

    @activity.defn(name=FINISH_TASK.name)
    async def finish_task(self, inp: MergeIn) -> FinishOut:
        first = f"checking and merging into {inp.target_branch}"
        retry = activity.info().attempt > 1
        # After the agent, not before it: on a busy machine the agents starting get the CPU
        # first, and this step's git and checks what is left.
        async with heartbeating(first) as note, sandbox_failures():
            with background():
                job = self._job(inp, note)
                return await finish_task(job, inp.attempts, retry, inp.after_agent)
