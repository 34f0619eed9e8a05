"""--publish pr: a checked change becomes a pull request on the code host, and the task follows it
until it merges, closes, or people ask for a fix.

The task's branch is pushed and its PR opened (or found: one per task, whatever retries and
crashes came before) once its checks pass and its review is done; the reviewer's verdict is
posted on it. Then the task reads the PR on a durable timer: a person's `/fix` or change request
starts a fix round whose change is pushed to the same PR; `/approve` or an approving review
satisfies --approval; `/skip` skips the task; with --require-checks a failing check starts a fix
round. When nothing more is awaited the host merges it. A PR merged or closed by a person is
respected. Every event is acted on once (its id is remembered in the workflow's state).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from autonomous_pipeline.models.activity_io import FixRequest, MergeOut
    from autonomous_pipeline.models.activity_refs import (
        CLOSE_PR,
        MERGE_PR,
        OPEN_PR,
        POST_PR_REVIEW,
        PUSH_BRANCH,
        READ_PR,
        WITHDRAW_PR,
        A,
        ActivityRef,
        R,
    )
    from autonomous_pipeline.models.forge import (
        BRANCH_MOVED,
        RATE_LIMITED,
        CheckState,
        ClosePrIn,
        EventKind,
        ForgeConfig,
        MergePrIn,
        MergePrOut,
        OpenPrIn,
        PrEvent,
        PrView,
        PullRequest,
        PushBranchIn,
        PushBranchOut,
        ReadPrIn,
        ReviewPostIn,
        WithdrawIn,
    )
    from autonomous_pipeline.models.results import CheckResult, TaskResult, TaskStatus
    from autonomous_pipeline.models.review import Finding, Verdict
    from autonomous_pipeline.models.run import TaskInput
    from autonomous_pipeline.workflows import metrics, policies
    from autonomous_pipeline.workflows.approval import from_operator
    from autonomous_pipeline.workflows.task_steps import TaskSteps, failure_message, run_of
    from autonomous_pipeline.workflows.work import Work

FORGE_TIMEOUT = timedelta(minutes=2)
# The host's rate limit is waited out this many times per call before the task fails.
MAX_LIMIT_WAITS = 20


class PullRequestSteps(TaskSteps):
    seen: list[str]  # ids of the PR's events acted on already
    # Heads handed to the host's auto-merge or merge queue (branch protection), and to which.
    handed_over: dict[str, str]
    pr_number: int | None  # the task's pull request, once opened or found
    pr_foreign: bool  # someone else pushed to its branch: it is theirs as much as the task's
    pushed_head: str | None  # what the pipeline last pushed to the task's branch
    pushed_at: str  # and when (ISO 8601, UTC): an approval by comment counts from then

    # TaskWorkflow's own steps, which a PR's fix round and conflict go through.
    async def _fix_round(
        self, inp: TaskInput, label: str, work: Work, fix: FixRequest
    ) -> Work | None:
        raise NotImplementedError

    async def _merged(self, inp: TaskInput, label: str, work: Work, merge: MergeOut) -> Work | None:
        raise NotImplementedError

    async def _merging(self, inp: TaskInput) -> None:
        raise NotImplementedError

    async def _through_pr(self, inp: TaskInput, label: str, work: Work) -> Work | None:
        """One round of a change through its pull request: the change to go on with (after a
        fix round), or None once the task has ended."""
        if work.standing is not None:
            fix, work.standing = work.standing, None
            return await self._fix_round(inp, label, work, fix)
        if not await self._verify(inp, label, work.base, work.commit):
            failed = [c for c in self.result.checks if not c.passed and not c.pre_existing]
            fix = FixRequest(failed=failed, failing_checks=[c.command for c in failed])
            return await self._fix_round(inp, label, work, fix)
        verdict = await self._review(inp, label, work.base, work.commit)
        pr = await self._publish(inp, label, work, verdict)
        if pr is None:
            return None
        if not verdict.approved:
            findings = verdict.blocking or verdict.findings
            return await self._fix_round(inp, label, work, FixRequest(findings=findings))
        return await self._follow(inp, label, work, pr)

    async def _publish(
        self, inp: TaskInput, label: str, work: Work, verdict: Verdict
    ) -> PullRequest | None:
        """Push the change, open (or find) its PR, post the verdict on it. None: the PR was
        merged or closed already (the task has ended)."""
        forge, res = self._forge(inp), self.result
        res.phase = "pull request"
        if self.pr_number is not None:
            # A fix round's change: the host must not merge it on its own before it is
            # checked and approved again.
            for handed_to in sorted(set(self.handed_over.values())):
                await self._host(
                    WITHDRAW_PR,
                    WithdrawIn(forge=forge, number=self.pr_number, handed_to=handed_to),
                    f"{label} — take #{self.pr_number} back from the {handed_to}",
                )
            self.handed_over.clear()
        try:
            pushed = await self._push(inp, label, work)
        except ActivityError as exc:
            if failure_message(exc).startswith(BRANCH_MOVED):
                self.pr_foreign = True  # someone else's commits are on it: theirs to close
            raise
        self.pushed_head, self.pushed_at = work.commit, iso(workflow.now())
        pr: PullRequest = await self._host(
            OPEN_PR,
            OpenPrIn(
                forge=forge,
                branch=pushed.branch,
                target_branch=inp.options.target_branch,
                title=f"Task {inp.task.id}: {inp.task.title}",
                body=pr_body(inp, res, forge),
                not_before=iso(workflow.info().start_time),
            ),
            f"{label} — open its pull request",
        )
        res.pull_request, self.pr_number = pr.url, pr.number
        if self._ended_on_host(pr):
            return None
        await self._on_host(
            POST_PR_REVIEW,
            ReviewPostIn(forge=forge, number=pr.number, commit=work.commit, verdict=verdict),
            f"{label} — post the review on #{pr.number}",
        )
        return pr

    async def _follow(self, inp: TaskInput, label: str, work: Work, pr: PullRequest) -> Work | None:
        """Read the PR on a timer until it merges, closes, or people ask for a fix; merge it
        through the host when nothing more is awaited."""
        forge, res, opts = self._forge(inp), self.result, inp.options
        await self._merging(inp)  # waiting on the host holds no agent slot
        await self._park(inp, label)
        approved = self._why_a_person(inp) is None
        view: PrView | None = None
        while True:
            # The first read answers at once; each later one only once the PR has changed
            # (or the operator has decided): see _watch.
            watched = await self._watch(inp, label, pr.number, view)
            view = watched or view
            assert view is not None
            pr = view.pr
            if self._ended_on_host(pr):
                return None
            if pr.head_sha != work.commit:
                # Someone pushed to the branch: what the pipeline checked is no longer what
                # would merge. It merges nothing it did not check, acts on no /fix or check of
                # that head (its push would overwrite theirs), and leaves the PR to people.
                self.pr_foreign = True
                self._skip_asked(view, work)
                # A decision is taken now (a reject ends the task), never left to wake the
                # watch again and again.
                self._operator_decided(inp, work.commit)
                if res.status in (TaskStatus.SKIPPED, TaskStatus.FAILED):
                    return None
                res.phase = (
                    f"pull request #{pr.number}: waiting for its head to be {work.commit[:12]}, "
                    f"which the pipeline checked (someone pushed {pr.head_sha[:12]}; merge it "
                    "yourself, or close it)"
                )
                continue
            for event in view.events:
                if event.id in self.seen:
                    continue
                self.seen.append(event.id)
                who = f"@{event.author} on #{pr.number}"
                if event.kind is EventKind.SKIP:
                    res.status, res.error = TaskStatus.SKIPPED, f"skipped by {who}"
                    return None
                if event.kind is EventKind.FIX:
                    said = [Finding(message=f"{who}: {event.body}")] if event.body else []
                    findings = said + event.findings or [
                        Finding(message=f"{who} asked for changes")
                    ]
                    res.phase = f"fix asked by {who}"
                    return await self._rework(inp, label, work, FixRequest(findings=findings))
                if approves(event, work.commit, self.pushed_at):
                    approved = True
                else:  # given on an earlier head: the change has moved on since
                    workflow.logger.info("task %s: %s approved an earlier head", inp.task.id, who)
            # The operator's signed approve or reject (starter.py approve), as without a PR; a
            # decision that is not theirs is dropped.
            if self._operator_decided(inp, work.commit):
                if res.status is TaskStatus.FAILED:
                    return None
                approved = True
            failing, waiting_for = checks_of(
                view, opts.forge.require_checks if opts.forge else False
            )
            if failing:
                res.checks = failing
                fix = FixRequest(failed=failing, failing_checks=[c.command for c in failing])
                return await self._rework(inp, label, work, fix)
            if not approved:
                waiting_for.insert(0, "a person's approval (/approve or an approving review)")
                res.approval_commit = work.commit  # the operator's signed approve counts too
                self.tell_approval(f"pull request #{pr.number} waits for a person", work.commit)
            else:
                res.approval_commit = None
            self.show()
            if not waiting_for and self.handed_over.get(pr.head_sha):
                # Auto-merge or the merge queue has it: the host merges it, this reads it.
                waiting_for = [f"the code host's {self.handed_over[pr.head_sha]}"]
            if not waiting_for:
                res.approval_commit = None
                merged = await self._merge_pr(inp, label, forge, pr, work)
                if merged is not None:
                    return merged if isinstance(merged, Work) else None
                handed = self.handed_over.get(pr.head_sha)
                if handed is None:
                    # The host would not merge it, and nothing it said changes that: try again
                    # a poll later with a fresh read (a target that moved, a check it runs).
                    res.phase = f"pull request #{pr.number}: the code host did not merge it yet"
                    await workflow.sleep(timedelta(seconds=forge.poll_s))
                    view = None
                    continue
                waiting_for = [f"the code host's {handed}"]
            res.phase = f"pull request #{pr.number}: waiting for " + ", ".join(waiting_for)

    async def _merge_pr(
        self, inp: TaskInput, label: str, forge: ForgeConfig, pr: PullRequest, work: Work
    ) -> Work | bool | None:
        """Merge through the host: True once merged (the task has ended), a Work to go on with
        (a conflict fixed), None: not merged yet (the host said why; wait and read again)."""
        res = self.result
        res.phase = f"merge #{pr.number}"
        task = inp.task
        out: MergePrOut = await self._host(
            MERGE_PR,
            MergePrIn(
                forge=forge,
                number=pr.number,
                target_branch=inp.options.target_branch,
                head_sha=work.commit,  # what was checked; the host refuses if the head moved
                title=f"Task {task.id}: {task.title} (#{pr.number})",
                message=merge_message(inp, res),
            ),
            f"{label} — merge #{pr.number} ({forge.merge_method.value})",
        )
        if out.merged:
            res.status, res.commit, res.error = TaskStatus.MERGED, out.commit, None
            return True
        if out.conflict:
            # The target moved under the PR and they conflict: the task's one conflict fix
            # round, as for a push; its change goes to the same PR. (`_merged` tells the run
            # the task works again.)
            self.result.phase = "conflict fix"
            after = await self._merged(
                inp, label, work, MergeOut(merged=False, conflict_paths=["(on the code host)"])
            )
            return after if after is not None else True
        if out.handed_to:
            self.handed_over[pr.head_sha] = out.handed_to
        workflow.logger.info("task %s: #%s not merged: %s", task.id, pr.number, out.reason)
        return None

    async def _push(self, inp: TaskInput, label: str, work: Work) -> PushBranchOut:
        """The change on the task's branch on the host, replacing only what was pushed last."""
        return await self._act(
            PUSH_BRANCH,
            PushBranchIn(
                run_key=inp.run_key,
                task_id=inp.task.id,
                repo=inp.options.repo,
                commit=work.commit,
                expected=self.pushed_head,
            ),
            start_to_close_timeout=policies.GIT_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=inp.options.heartbeat_timeout_s),
            retry_policy=policies.GIT_RETRY,
            summary=f"{label} — push the task's branch",
        )

    def _skip_asked(self, view: PrView, work: Work) -> None:
        """A PR whose head someone else pushed: of people's new words only a /skip is acted on
        (the task ends skipped; the PR is theirs to close); the rest is noted as seen."""
        for event in view.events:
            if event.id in self.seen:
                continue
            self.seen.append(event.id)
            if event.kind is EventKind.SKIP:
                who = f"@{event.author} on #{view.pr.number}"
                self.result.status, self.result.error = TaskStatus.SKIPPED, f"skipped by {who}"
                return

    async def _park(self, inp: TaskInput, label: str) -> None:
        """Give the checkout back while the PR waits on people and checks (hours, maybe days):
        the run's next tasks need not wait for them. The branch stays in the pipeline's clone;
        a fix round builds the checkout again at the PR's head."""
        await self._put_away(inp, f"{label} — put the worktree away while the PR waits", False)
        if workflow.info().parent is not None:
            self._tell_parent_soon("task_parked")

    async def _rework(self, inp: TaskInput, label: str, work: Work, fix: FixRequest) -> Work | None:
        """A fix round asked for on the PR: the task works (and holds a checkout) again."""
        if workflow.info().parent is not None:
            self._tell_parent_soon("task_working")
        return await self._fix_round(inp, label, work, fix)

    async def _close_left_pr(self, inp: TaskInput, label: str, cancelled: bool) -> None:
        """A task that ends without its change merged closes the PR it opened, saying why:
        nobody should merge work the run gave up on (its dependants were skipped). Not one a
        person closed or merged, nor one someone else pushed to."""
        res = self.result
        if (
            self.pr_number is None
            or self.pr_foreign
            or res.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.SKIPPED)
        ):
            return
        why = f"The pipeline ended task {inp.task.id} {res.status.value}"
        why += f": {res.error}" if res.error else "."
        close = self._host(
            CLOSE_PR,
            ClosePrIn(forge=self._forge(inp), number=self.pr_number, why=why[:2000]),
            f"{label} — close #{self.pr_number}",
        )
        try:
            # A cancelled task still closes it; its own cancellation must not cancel that.
            await (asyncio.shield(close) if cancelled else close)
        except ActivityError as exc:
            workflow.logger.warning("could not close #%s: %s", self.pr_number, exc)

    def _ended_on_host(self, pr: PullRequest) -> bool:
        """A PR merged or closed by a person: their decision stands."""
        res = self.result
        if pr.merged:
            res.status, res.commit, res.error = TaskStatus.MERGED, pr.merge_commit, None
            return True
        if not pr.open:
            who = f"@{pr.closed_by}" if pr.closed_by else "a person"
            res.status = TaskStatus.FAILED
            res.error = f"pull request #{pr.number} was closed by {who} without merging"
            return True
        return False

    def _operator_decided(self, inp: TaskInput, commit: str) -> bool:
        """The operator's signed approve or reject (starter.py approve), as without a PR."""
        decision, self.decision = self.decision, None
        if decision is None or not from_operator(
            inp.approver, decision.token, decision.approved, run_of(), inp.task.id, commit,
            inp.approval_digest,
        ):  # fmt: skip
            return False
        if not decision.approved:
            self.result.status = TaskStatus.FAILED
            self.result.error = "rejected" + (f": {decision.reason}" if decision.reason else "")
        return True

    def _forge(self, inp: TaskInput) -> ForgeConfig:
        assert inp.options.forge is not None  # the starter refuses --publish pr without one
        return inp.options.forge

    async def _watch(
        self, inp: TaskInput, label: str, number: int, last: PrView | None
    ) -> PrView | None:
        """The PR once it differs from `last` (at once when there is none); None when the
        operator decided first. Waiting is the server's: each read that finds nothing new
        fails and is retried a poll later, which leaves nothing in the history, so a PR can
        wait for days; a decision cancels the wait."""
        forge = self._forge(inp)
        read = ReadPrIn(
            forge=forge,
            number=number,
            target_branch=inp.options.target_branch,
            unchanged_since=last.digest if last is not None else None,
            known=list(self.seen),
        )
        # A host that fails (an outage) is read again a poll later, however long it takes.
        poll = timedelta(seconds=forge.poll_s)
        every_poll = RetryPolicy(
            initial_interval=poll, backoff_coefficient=1.0, maximum_interval=poll
        )
        got = await self._on_host(
            READ_PR,
            read,
            f"{label} — watch #{number}",
            every_poll,
            until_decided=last is not None,
            patient=True,
        )
        return got

    async def _host(self, ref: ActivityRef[A, R], arg: A, summary: str) -> R:
        """A call to the code host that answers (see _on_host)."""
        got = await self._on_host(ref, arg, summary)
        assert got is not None  # only a call waiting for a decision comes back empty
        return got

    async def _first_of(self, call: asyncio.Future[Any]) -> bool:
        """Wait for `call` or the operator's decision: False (and `call` cancelled) if the
        decision came first."""
        await workflow.wait_condition(lambda: call.done() or self.decision is not None)
        if call.done():
            return True
        call.cancel()
        try:
            await call
        except (ActivityError, asyncio.CancelledError):
            workflow.logger.debug("the watch was cancelled for the operator's decision")
        return False

    async def _on_host(
        self,
        ref: ActivityRef[A, R],
        arg: A,
        summary: str,
        retry: RetryPolicy | None = None,
        until_decided: bool = False,
        patient: bool = False,
    ) -> R | None:
        """A call to the code host on the shared queue, its rate limit waited out on a timer."""
        waits = 0
        while True:
            call = workflow.start_activity(
                ref.name,
                arg,
                result_type=ref.result,
                start_to_close_timeout=FORGE_TIMEOUT,
                # A worker killed mid-call is noticed in seconds; the call is safe to repeat.
                heartbeat_timeout=timedelta(seconds=self.inp.options.heartbeat_timeout_s),
                retry_policy=retry or policies.GIT_RETRY,
                summary=summary,
            )
            if until_decided and not await self._first_of(call):
                return None
            try:
                return await call
            except ActivityError as exc:
                delay = rate_limit_delay(exc)
                # A watch may last days: the limit resets every hour, and it waits each out.
                if delay is None or (waits >= MAX_LIMIT_WAITS and not patient):
                    raise
                waits += 1
                phase, self.result.phase = (
                    self.result.phase,
                    f"waiting {int(delay)} s for the code host's rate limit",
                )
                await workflow.sleep(delay)
                metrics.limit_waited(delay, "code_host")
                self.result.phase = phase


def rate_limit_delay(exc: ActivityError) -> float | None:
    """Seconds to wait when the host refused for its rate limit; None for any other failure."""
    cause = exc.cause
    if not isinstance(cause, ApplicationError) or cause.type != RATE_LIMITED:
        return None
    details: list[Any] = list(cause.details)
    after = details[0] if details and isinstance(details[0], (int, float)) else 60.0
    return float(min(max(after, 0.0) + 1.0, 3600.0))


def checks_of(view: PrView, required: bool) -> tuple[list[CheckResult], list[str]]:
    """(the failing checks, as a fix round reads them; what is still awaited) of the PR's head."""
    if not required:
        return [], []
    names = view.required or [c.name for c in view.checks]
    by_name = {c.name: c for c in view.checks}
    failing = [
        CheckResult(
            command=f"{n} (the code host's check: {by_name[n].url or 'no link'})",
            exit_code=1,
            passed=False,
        )
        for n in names
        if n in by_name and by_name[n].state is CheckState.FAILED
    ]
    pending = [n for n in names if n not in by_name or by_name[n].state is CheckState.PENDING]
    if not names:
        return failing, ["checks (none reported yet)"]
    return failing, [f"checks ({', '.join(pending)})"] if pending else []


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def approves(event: PrEvent, commit: str, pushed_at: str) -> bool:
    """Whether an approval is of `commit`: a review names the head it was given on; a comment
    counts when made once `commit` was pushed (`pushed_at` is when the push had ended; the
    host's times are to the second)."""
    if event.kind is not EventKind.APPROVE:
        return False
    if event.commit:
        return event.commit == commit
    return event.at >= pushed_at


def pr_body(inp: TaskInput, res: TaskResult, forge: ForgeConfig) -> str:
    task = inp.task
    summary = "\n".join(task.instructions.strip().splitlines()[:12])
    lines = [f"Task **{task.id}** of the plan, done by the `{inp.options.agent.backend}` agent."]
    if summary:
        lines += ["", "### Instructions (summary)", "", summary]
    if res.summary:
        # The agent's words, as text: no link, image, mention or "Fixes #N" of theirs acts.
        said = res.summary[:1500].replace("`", "'")
        lines += ["", "### The agent's summary", "", "```text", said, "```"]
    if res.checks:
        lines += ["", "### Checks", ""]
        lines += [f"- {'✅' if c.passed else '❌'} `{c.command}`" for c in res.checks]
    lines += ["", f"Cost so far: ${res.cost_usd:.4f}"]
    if forge.web_ui:
        lines += ["", f"The run in the Temporal Web UI: {forge.web_ui}"]
    return "\n".join(lines)[:60000]


def merge_message(inp: TaskInput, res: TaskResult) -> str:
    """The merge commit's body: the task's trailer, by which a merge is recognised after any
    crash. Not the agent's words: a "Fixes #N" of theirs would close an issue."""
    return f"Pipeline-Task: {inp.run_key}/{inp.task.id}"
