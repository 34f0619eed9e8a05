"""run_agent: prepare the worktree, run the agent (or its fix round), commit what it changed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar, cast

from temporalio import activity
from temporalio.exceptions import ApplicationError

from autonomous_pipeline.activities.heartbeat import heartbeating
from autonomous_pipeline.activities.sandboxing import sandbox_failures, sandbox_for
from autonomous_pipeline.activities.slots import giving_back
from autonomous_pipeline.backends.agents.claude_failures import parse_failure
from autonomous_pipeline.backends.base import (
    AgentBackend,
    AgentOutcome,
    AgentRequest,
    Role,
    SandboxBackend,
    SessionAgent,
)
from autonomous_pipeline.backends.prompt import build_prompt
from autonomous_pipeline.backends.review import fix_prompt
from autonomous_pipeline.backends.sandboxes.registry import Sandboxes
from autonomous_pipeline.backends.secrets import agent_env
from autonomous_pipeline.backends.workspace.checkout import Checkout
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.activity_io import LIST_CAP, RunAgentIn, RunAgentOut
from autonomous_pipeline.models.activity_refs import RUN_AGENT
from autonomous_pipeline.models.failure import FailureKind
from autonomous_pipeline.models.results import Spend
from autonomous_pipeline.models.run import AgentConfig, ReviewerConfig
from autonomous_pipeline.models.sandbox import SandboxConfig, SandboxKind

C = TypeVar("C", AgentConfig, ReviewerConfig)

TRAILER = "Pipeline-Task"
# The error type of a failure no retry can fix: the agent's credentials were refused.
AUTH_ERROR = "AgentAuthError"
# The worktree of a conflict fix is gone and cannot be rebuilt: the conflict is lost.
CONFLICT_LOST = "ConflictStateLost"
# An agent's error carries its output's last lines; a flood of output must not reach history.
ERROR_CHARS = 4000


def clip(text: str | None, limit: int = ERROR_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 40] + f"\n[... {len(text) - limit + 40} more characters]"


def has_sessions(backend: AgentBackend) -> bool:
    return getattr(backend, "sessions", False) is True


def commit_message(inp: RunAgentIn, summary: str) -> str:
    task = inp.task
    subject = task.commit_message or f"Task {task.id}: {task.title}"
    if (
        inp.fix is not None
        and not inp.fix.conflicts
        and (inp.fix.findings or inp.fix.failing_checks)
    ):
        subject += " (fix round)"
    body = f"\n\n{summary.strip()}" if summary.strip() else ""
    # The trailer is how a merge recognises work it already published (exactly-once).
    return f"{subject}{body}\n\n{TRAILER}: {inp.run_key}/{task.id}\n"


def failure_of(outcome: AgentOutcome) -> tuple[FailureKind, float | None]:
    """What kind of failure a failed outcome reports.

    A backend that knows says so as data (`outcome.failure`), taken at its word. Otherwise the
    error is free text (a command agent's), classified by pattern: good enough to wait out a rate
    limit, not to declare the credentials bad (a test named `test_401` must not end a task), so a
    guessed AUTH counts as OTHER.
    """
    if outcome.failure is not None:
        return outcome.failure.kind, outcome.failure.reset_at
    kind, reset_at = parse_failure(outcome.error or "")
    if kind is FailureKind.AUTH:
        kind = FailureKind.OTHER
    return kind, reset_at


def for_image(config: C, sandbox: SandboxConfig) -> C:
    """An agent's config as its sandbox runs it: in a container, the image's claude CLI."""
    spec = sandbox.container
    if sandbox.kind is SandboxKind.WORKTREE or spec is None or spec.claude_bin is None:
        return config
    claude = config.claude.model_copy(update={"binary": spec.claude_bin})
    return config.model_copy(update={"claude": claude})


def raise_if_auth(kind: FailureKind, error: str | None, who: str) -> None:
    if kind is FailureKind.AUTH:
        raise ApplicationError(
            f"{who}: credentials refused: {error or 'authentication failed'}",
            type=AUTH_ERROR,
            non_retryable=True,
        )


class AgentActivities:
    def __init__(self, sandboxes: Sandboxes, agents: Callable[[AgentConfig], AgentBackend]) -> None:
        self.sandboxes = sandboxes
        self.workspaces = sandboxes.workspaces
        self.agents = agents

    async def _workdir(
        self, inp: RunAgentIn, sandbox: SandboxBackend, resume: bool, first: bool
    ) -> tuple[Checkout, bool]:
        """The checkout the agent runs in, and whether its session is resumed. `first`: the
        task's first agent run, in its first attempt (no agent has been in the worktree)."""
        task, start = inp.task, inp.start_commit or inp.base_commit
        ref = TaskRef(inp.run_key, task.id)
        if inp.fix is not None and inp.fix.conflicts:
            # The conflict markers prepare_conflict_fix left are the input: never reset them.
            wt = await self.workspaces.worktree_at(ref, start)
            if wt is None:
                wt = await self.workspaces.restore_conflict(ref, start)
            if wt is None:
                raise ApplicationError(
                    f"task {task.id}: the worktree prepared for the conflict fix on {start[:12]} "
                    "is gone and nothing records it",
                    type=CONFLICT_LOST,
                    non_retryable=True,
                )
            return wt, resume
        if resume:
            # The session's own edits are in the worktree: keep them, if it is still there.
            wt = await self.workspaces.worktree_at(ref, start)
            if wt is not None:
                return wt, True
            activity.logger.warning(
                "task %s: the worktree to resume is gone or moved; starting afresh", task.id
            )
        if first and inp.prepared and (co := await self.workspaces.checkout(ref)) is not None:
            # The task's first agent, first attempt, after a fresh claim that checked the
            # worktree clean at `start`: nothing has run in it since.
            return co, False
        if first and (co := await self.workspaces.clean_at(ref, start)) is not None:
            # The task's first agent, first attempt: prepare_workspace has just left this
            # worktree clean at `start`; checking that it still is costs less than a reset.
            return co, False
        # A fresh attempt never builds on the half-finished files of one that died.
        return await sandbox.reset(ref, start), False

    @activity.defn(name=RUN_AGENT.name)
    async def run_agent(self, inp: RunAgentIn) -> RunAgentOut:
        task = inp.task
        ref = TaskRef(inp.run_key, task.id)
        attempt = activity.info().attempt
        sandbox = sandbox_for(self.sandboxes, inp.sandbox, inp.run_key)
        backend = self.agents(for_image(inp.agent, inp.sandbox))
        sessions = has_sessions(backend) and inp.session_id is not None
        transcript = self.workspaces.layout.transcript_path(ref)
        # An agent orphaned by a worker killed outright must not keep writing into the worktree.
        if await sandbox.reap(ref):
            activity.logger.warning(
                "killed what a previous attempt of task %s left running", task.id
            )
        # A retry after a crash continues the session, like a resume the workflow asked for.
        first = attempt == 1 and not inp.resume and inp.fix is None
        co, resume = await self._workdir(
            inp, sandbox, sessions and (inp.resume or attempt > 1), first
        )
        prompt = build_prompt(task, inp.plan_title, inp.start_commit or inp.base_commit)
        if inp.fix is not None:
            prompt = fix_prompt(task, prompt, inp.fix)
        request = AgentRequest(
            task_id=task.id,
            title=task.title,
            prompt=prompt,
            instructions=task.instructions,
            workdir=co.path,
            transcript=transcript,
            timeout_s=inp.agent.timeout_s,
            command=inp.agent.command,
            # The base allow-list and the variables the run names: credentials are opt-in.
            env=agent_env(inp.agent.env),
            isolated=inp.sandbox.isolated,
            checks=task.commands,
        )
        runner = sandbox.runner(ref, co, Role.AGENT)
        what = "fix" if inp.fix is not None else "agent"
        started = time.monotonic()
        async with (
            heartbeating(
                f"{inp.agent.backend} {what} starting (attempt {attempt}"
                + (", resuming its session)" if resume else ")")
            ) as note,
            sandbox_failures(),
        ):
            if sessions:
                outcome = await cast(SessionAgent, backend).run(
                    request, note, runner, session_id=inp.session_id, resume=resume
                )
            else:
                outcome = await backend.run(request, note, runner)
        out = RunAgentOut(
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            succeeded=outcome.succeeded,
            summary=outcome.summary[:2000],
            transcript=str(transcript),
            duration_s=round(time.monotonic() - started, 3),
            error=clip(outcome.error),
            attempt=attempt,
            cost_usd=outcome.cost_usd,
            tokens_in=outcome.tokens_in,
            tokens_out=outcome.tokens_out,
            session_id=outcome.session_id or (inp.session_id if sessions else None),
            permission_denials=outcome.permission_denials[:LIST_CAP],
        )
        activity.logger.info(
            "%s agent exited %s after %.1f s",
            inp.agent.backend,
            outcome.exit_code,
            out.duration_s,
            extra={"succeeded": outcome.succeeded, "cost_usd": outcome.cost_usd},
        )
        if outcome.permission_denials:
            with transcript.open("a", encoding="utf-8") as fh:
                fh.write(
                    "\n[pipeline] the agent was refused: "
                    + "; ".join(outcome.permission_denials)
                    + "\n"
                )
        if not outcome.succeeded:
            kind, out.reset_at = failure_of(outcome)
            out.failure_kind = kind
            raise_if_auth(kind, outcome.error, f"{inp.agent.backend} agent")
            # Rate limits and overload are results: the workflow waits on a durable timer.
            return out
        # The agent has exited: its slot goes back while its change is collected. Heartbeating
        # on: a collect that outlived the heartbeat timeout would be retried in place, its agent
        # beside the one that took the slot.
        spent = Spend.model_validate(out.model_dump())
        async with (
            heartbeating(f"{inp.agent.backend} {what}: collecting the change"),
            giving_back(inp.slot, task.id, attempt, spent),
        ):
            # Fix rounds commit on top of the task's commit; the base stays the task's base.
            done = await sandbox.collect(
                ref,
                inp.base_commit,
                commit_message(inp, outcome.summary),
                named=[f.path for f in task.files],
            )
        if done.left_out:
            # Said where the person looking into the task reads: its transcript.
            with transcript.open("a", encoding="utf-8") as fh:
                fh.write("\n[pipeline] left out of the commit: " + ", ".join(done.left_out) + "\n")
        out.left_out = done.left_out[:LIST_CAP]
        if done.rejected is not None:
            out.succeeded, out.failure_kind = False, FailureKind.OTHER
            out.error = f"the change was rejected: {done.rejected}"
            return out
        out.commit = done.commit
        out.changed_files, out.changed_total = done.changed[:LIST_CAP], len(done.changed)
        out.unasked_deletions = done.deleted[:LIST_CAP]
        out.unasked_deletions_total = len(done.deleted)
        return out
