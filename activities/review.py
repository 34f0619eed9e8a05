"""review_task: a reviewer agent reads the task's change and answers with a verdict.

The verdict is data (approved or not, with findings), never an exception. An exception means the
reviewer could not give one: it failed to run (retried with backoff) or its credentials were
refused (not retried). Reviewing never changes the worktree: whatever the reviewer left there is
discarded, and said in a finding.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from autonomous_pipeline.activities.agent import failure_of, for_image, raise_if_auth
from autonomous_pipeline.activities.heartbeat import heartbeating
from autonomous_pipeline.activities.sandboxing import sandbox_failures, sandbox_for
from autonomous_pipeline.backends.base import AgentBackend, AgentOutcome, AgentRequest, Role
from autonomous_pipeline.backends.review import parse_verdict, review_prompt
from autonomous_pipeline.backends.sandboxes.registry import Sandboxes
from autonomous_pipeline.backends.secrets import agent_env
from autonomous_pipeline.backends.workspace.checkout import Checkout, scrub_special_files
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.activity_io import ReviewIn, ReviewOut
from autonomous_pipeline.models.activity_refs import REVIEW_TASK
from autonomous_pipeline.models.review import Finding, Severity, Verdict
from autonomous_pipeline.models.run import ReviewerConfig

REVIEWER_ERROR = "ReviewerError"
MODIFIED = "the reviewer modified files; its changes were discarded"
# A rate-limited reviewer is retried at its reset time, but never waits longer than this per try.
MAX_LIMIT_DELAY = timedelta(hours=1)


def diff_counts(numstat: str) -> tuple[int, int]:
    """(files changed, lines deleted) from `git diff --numstat`; a binary file's '-' counts 0."""
    files = deleted = 0
    for line in numstat.splitlines():
        parts = line.split("\t", 2)
        if len(parts) < 3:
            continue
        files += 1
        deleted += int(parts[1]) if parts[1].isdigit() else 0
    return files, deleted


def review_transcript(transcript: Path) -> Path:
    """`<task>.review-N.log` beside the task's transcript, N one more than the last one's."""
    pattern = re.compile(re.escape(transcript.stem) + r"\.review-(\d+)\.log$")
    taken = [int(m.group(1)) for p in transcript.parent.iterdir() if (m := pattern.match(p.name))]
    return transcript.with_name(f"{transcript.stem}.review-{max(taken, default=0) + 1}.log")


# A diffstat longer than this keeps its first lines and its summary line.
DIFFSTAT_LINES = 40


def bounded_stat(stat: str) -> str:
    lines = stat.rstrip().splitlines()
    if len(lines) <= DIFFSTAT_LINES:
        return "\n".join(lines)
    cut = len(lines) - DIFFSTAT_LINES
    return "\n".join([*lines[: DIFFSTAT_LINES - 1], f" ... {cut} more files", lines[-1]])


async def _state(co: Checkout) -> tuple[str | None, str, str, bool]:
    """What reviewing must leave as it found: HEAD, the branch, the status of every file, and
    the `.git` pointer."""
    scrub_special_files(co.path)  # what a reviewer left must not block git status
    status = await co.git("status", "--porcelain", "-z", "--untracked-files=all")
    return await co.head(), await co.current_branch(), status.output, co.pointer_intact()


class ReviewActivities:
    def __init__(
        self,
        sandboxes: Sandboxes,
        reviewers: Callable[[ReviewerConfig], AgentBackend | None],
    ) -> None:
        self.sandboxes = sandboxes
        self.workspaces = sandboxes.workspaces
        self.reviewers = reviewers

    async def _workdir(self, inp: ReviewIn) -> Checkout:
        """The task's checkout at the commit under review (rebuilt if it is gone or elsewhere)."""
        ref = TaskRef(inp.run_key, inp.task.id)
        co = await self.workspaces.worktree_at(ref, inp.commit)
        if co is None or await co.head() != inp.commit:
            co = await self.workspaces.reset(ref, inp.commit)
        return co

    @activity.defn(name=REVIEW_TASK.name)
    async def review_task(self, inp: ReviewIn) -> ReviewOut:
        task, cfg = inp.task, inp.reviewer
        ref = TaskRef(inp.run_key, task.id)
        async with heartbeating(f"review of task {task.id}: reading the change") as note:
            co = await self._workdir(inp)
            span = (inp.base_commit, inp.commit)
            opts = ("--no-color", "--no-ext-diff", "-M")
            numstat = await co.git("diff", *opts, "--numstat", *span)
            files, deleted = diff_counts(numstat.output)
            stat = await co.git("diff", *opts, "--stat=100", *span)
            out = ReviewOut(
                verdict=Verdict(approved=True, summary="no reviewer"),
                files_changed=files,
                lines_deleted=deleted,
                diffstat=bounded_stat(stat.output),
            )
            if cfg.backend == "none":
                return out
            backend = self.reviewers(for_image(cfg, inp.sandbox))
            if backend is None:
                return out
            if cfg.backend == "command" and not cfg.command:
                raise ApplicationError(
                    "the command reviewer has no command", type=REVIEWER_ERROR, non_retryable=True
                )
            sandbox = sandbox_for(self.sandboxes, inp.sandbox, inp.run_key)
            diff = await co.git("diff", *opts, *span)
            transcript = self.workspaces.layout.transcript_path(ref)
            # A reviewer orphaned by a worker killed outright must not outlive its attempt.
            await sandbox.reap(ref)
            log = review_transcript(transcript)
            request = AgentRequest(
                task_id=task.id,
                title=task.title,
                prompt=review_prompt(task, diff.output, stat.output.rstrip(), inp.checks),
                instructions=task.instructions,
                workdir=co.path,
                transcript=log,
                timeout_s=cfg.timeout_s,
                command=cfg.command,
                env=agent_env(cfg.env),
                isolated=inp.sandbox.isolated,
            )
            before = await _state(co)
            note(f"{cfg.backend} reviewer running on {files} file(s)")
            try:
                # A fresh conversation every time (the claude backend gets no session id), and
                # for claude the read-only "plan" permission mode unless the run chose another.
                # Its edits are discarded afterwards; the sandbox keeps it out of everything else.
                async with sandbox_failures():
                    runner = sandbox.runner(ref, co, Role.REVIEWER)
                    outcome = await backend.run(request, note, runner)
            finally:
                modified = await self._discard_changes(inp, co, before)
        out.transcript = str(log)
        out.cost_usd, out.tokens_in, out.tokens_out = (
            outcome.cost_usd,
            outcome.tokens_in,
            outcome.tokens_out,
        )
        if not outcome.succeeded:
            self._raise_failure(outcome, cfg.backend)
        verdict = parse_verdict(outcome.text or outcome.summary)
        if modified:
            # A nit: the reviewer's misstep is no reason to reject the change, nor a fix's task.
            verdict.findings.append(Finding(severity=Severity.NIT, message=MODIFIED))
        out.verdict = verdict
        return out

    async def _discard_changes(
        self, inp: ReviewIn, co: Checkout, before: tuple[str | None, str, str, bool]
    ) -> bool:
        """Put back the checkout if the reviewer changed it; True when it had."""
        if await _state(co) == before:
            return False
        activity.logger.warning("the reviewer changed %s; its changes are discarded", co.path)
        await self.workspaces.reset(TaskRef(inp.run_key, inp.task.id), inp.commit)
        return True

    @staticmethod
    def _raise_failure(outcome: AgentOutcome, backend: str) -> None:
        kind, reset_at = failure_of(outcome)
        raise_if_auth(kind, outcome.error, f"{backend} reviewer")
        delay = None
        if reset_at is not None:
            delay = min(timedelta(seconds=max(reset_at - time.time(), 1)), MAX_LIMIT_DELAY)
        raise ApplicationError(
            f"the {backend} reviewer failed: {outcome.error or 'no verdict'}",
            type=REVIEWER_ERROR,
            next_retry_delay=delay,
        )
