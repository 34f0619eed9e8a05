"""run_agent: put the worktree back at the task's base, run the agent, commit what it changed."""

from __future__ import annotations

import time
from collections.abc import Callable

from temporalio import activity

from activities.heartbeat import heartbeating
from backends._proc import kill_recorded_group
from backends.base import AgentBackend, AgentRequest, pgid_file
from backends.prompt import build_prompt
from backends.sandboxes.git_worktree import GitWorktreeSandbox
from models.activity_io import RunAgentIn, RunAgentOut

TRAILER = "Pipeline-Task"


def commit_message(inp: RunAgentIn, summary: str) -> str:
    task = inp.task
    subject = task.commit_message or f"Task {task.id}: {task.title}"
    body = f"\n\n{summary.strip()}" if summary.strip() else ""
    # The trailer is how a merge recognises work it already published (exactly-once).
    return f"{subject}{body}\n\n{TRAILER}: {inp.run_key}/{task.id}\n"


class AgentActivities:
    def __init__(self, sandbox: GitWorktreeSandbox, agents: Callable[[str], AgentBackend]) -> None:
        self.sandbox = sandbox
        self.agents = agents

    @activity.defn(name="run_agent")
    async def run_agent(self, inp: RunAgentIn) -> RunAgentOut:
        task = inp.task
        attempt = activity.info().attempt
        backend = self.agents(inp.agent.backend)
        transcript = self.sandbox.transcript_path(inp.run_key, task.id)
        # An agent orphaned by a worker killed outright must not keep writing into the worktree.
        if kill_recorded_group(pgid_file(transcript)):
            activity.logger.warning(
                "killed the agent left running by a previous attempt of task %s", task.id
            )
        # Every attempt starts from the recorded base: a retry after a crash never builds on the
        # half-finished files of the attempt that died.
        workdir = await self.sandbox.reset(inp.run_key, task.id, inp.base_commit)
        request = AgentRequest(
            task_id=task.id,
            title=task.title,
            prompt=build_prompt(task, inp.plan_title, inp.base_commit),
            instructions=task.instructions,
            workdir=workdir,
            transcript=transcript,
            timeout_s=inp.agent.timeout_s,
            command=inp.agent.command,
            env={},  # the backend passes a minimal environment; credentials are opt-in
        )
        started = time.monotonic()
        async with heartbeating(f"{inp.agent.backend} agent starting (attempt {attempt})") as note:
            outcome = await backend.run(request, note)
        elapsed = round(time.monotonic() - started, 3)
        out = RunAgentOut(
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            succeeded=outcome.succeeded,
            summary=outcome.summary[:2000],
            transcript=str(transcript),
            duration_s=elapsed,
            error=outcome.error,
            attempt=attempt,
        )
        if not outcome.succeeded:
            return out
        commit, changed = await self.sandbox.commit_all(
            inp.run_key, task.id, inp.base_commit, commit_message(inp, outcome.summary)
        )
        out.commit, out.changed_files = commit, changed
        return out
