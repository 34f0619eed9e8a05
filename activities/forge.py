"""The code host's steps: push a task's branch, open or find its pull request, post the review,
read what people said and the checks, merge. Thin: the Forge backends speak to the host.

Every one is safe to run twice (a retried attempt finds the PR the first one opened, a verdict
posted once, a PR merged already). Only the push needs the task's clone, so it runs on the
claimed worker's queue; the others on the shared one, so a task waiting on a person for hours
depends on no one machine. The rate limit is not retried here: the task waits it out on a
durable timer (RATE_LIMITED, with the seconds to wait).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator

from temporalio import activity
from temporalio.exceptions import ApplicationError

from autonomous_pipeline.activities.heartbeat import heartbeating
from autonomous_pipeline.backends.forges import TOKEN_ENV, forge_token, make_forge
from autonomous_pipeline.backends.forges.base import Forge, ForgeError, RateLimited
from autonomous_pipeline.backends.git import git, push_with_lease, rev_parse
from autonomous_pipeline.backends.workspace.clones import Clones
from autonomous_pipeline.backends.workspace.layout import TaskRef
from autonomous_pipeline.models.activity_refs import (
    CLOSE_PR,
    MERGE_PR,
    OPEN_PR,
    POST_PR_REVIEW,
    PUSH_BRANCH,
    READ_PR,
    WITHDRAW_PR,
)
from autonomous_pipeline.models.forge import (
    BRANCH_MOVED,
    NOTHING_NEW,
    RATE_LIMITED,
    ClosePrIn,
    ClosePrOut,
    ForgeConfig,
    MergePrIn,
    MergePrOut,
    OpenPrIn,
    PrView,
    PullRequest,
    PushBranchIn,
    PushBranchOut,
    ReadPrIn,
    ReviewPostIn,
    ReviewPostOut,
    WithdrawIn,
    WithdrawOut,
)


def digest(view: PrView) -> str:
    """What a task acts on in a view, hashed: its state, head, people's events and checks.
    (Not `mergeable`, which GitHub computes lazily and flips between reads.)"""
    pr = view.pr
    facts = {
        "pr": [pr.open, pr.merged, pr.merge_commit, pr.head_sha, pr.closed_by],
        "events": [e.id for e in view.events],
        "checks": sorted((c.name, c.state.value, c.url or "") for c in view.checks),
        "required": view.required,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


@contextlib.asynccontextmanager
async def on_the_host(note: str) -> AsyncIterator[None]:
    """A call to the code host: heartbeating (a worker killed mid-call is noticed in seconds),
    and the host's refusals as the activity's failure."""
    try:
        async with heartbeating(note):
            yield
    except ForgeError as exc:
        raise forge_failure(exc) from None


def forge_failure(exc: ForgeError) -> ApplicationError:
    """A refusal of the host's as the activity's failure: the rate limit to be waited out by the
    task, a 4xx that a retry would only repeat as final, the rest (5xx, the network) retried."""
    if isinstance(exc, RateLimited):
        return ApplicationError(str(exc), exc.retry_after_s, type=RATE_LIMITED, non_retryable=True)
    final = exc.status is not None and 400 <= exc.status < 500
    return ApplicationError(str(exc), type="ForgeError", non_retryable=final)


class ForgeActivities:
    def __init__(self, clones: Clones) -> None:
        self.clones = clones
        # One client per host, repository and token for the worker's life: its connections
        # and what it knows of people's permissions last from one read to the next.
        self._forges: dict[tuple[str, str], Forge] = {}

    def _forge(self, config: ForgeConfig) -> Forge:
        token = forge_token()
        if token is None:
            raise ApplicationError(
                f"no token for the code host on this worker: set {TOKEN_ENV} (or log in with "
                "`gh auth login`) where the worker runs",
                type="ForgeError",
                non_retryable=True,
            )
        key = (config.model_dump_json(include={"kind", "api_url", "repository"}),
               hashlib.sha256(token.encode()).hexdigest())  # fmt: skip
        if key not in self._forges:
            self._forges[key] = make_forge(config, token)
        return self._forges[key]

    @activity.defn(name=PUSH_BRANCH.name)
    async def push_branch(self, inp: PushBranchIn) -> PushBranchOut:
        """The task's branch on the repository's remote, at `commit` (forced: the branch is the
        task's own, and a conflict fix moves it onto a new base)."""
        task = TaskRef(inp.run_key, inp.task_id)
        clone = await self.clones.of(task)
        async with heartbeating(f"pushing {task.branch}"), self.clones.lock(clone):
            if await rev_parse(inp.commit, clone) is None:
                raise ApplicationError(
                    f"commit {inp.commit[:12]} is not in the task's clone", non_retryable=True
                )
            if inp.expected is None:
                # The task's first push: the branch is the task's (an earlier try's, if any).
                await git("push", "--quiet", "--no-verify", "--force", "origin",
                          f"{inp.commit}:refs/heads/{task.branch}", cwd=clone)  # fmt: skip
            elif await push_with_lease(clone, inp.commit, task.branch, inp.expected) == "moved":
                raise ApplicationError(
                    f"{task.branch} was pushed to by someone else since the pipeline pushed "
                    f"{inp.expected[:12]}: their commits are not overwritten",
                    type=BRANCH_MOVED,
                    non_retryable=True,
                )
        return PushBranchOut(branch=task.branch, commit=inp.commit)

    @activity.defn(name=OPEN_PR.name)
    async def open_pr(self, inp: OpenPrIn) -> PullRequest:
        async with on_the_host(f"opening the pull request of {inp.branch}"):
            return await self._forge(inp.forge).open_pr(
                inp.branch, inp.target_branch, inp.title, inp.body, inp.not_before
            )

    @activity.defn(name=POST_PR_REVIEW.name)
    async def post_review(self, inp: ReviewPostIn) -> ReviewPostOut:
        async with on_the_host(f"posting the review on #{inp.number}"):
            forge = self._forge(inp.forge)
            return ReviewPostOut(
                posted=await forge.post_review(inp.number, inp.commit, inp.verdict)
            )

    @activity.defn(name=READ_PR.name)
    async def read_pr(self, inp: ReadPrIn) -> PrView:
        """The PR as it stands; with `unchanged_since`, only once it has changed: until then
        each attempt fails with NOTHING_NEW and the server tries again a poll later. Polling by
        retries leaves no events in the task's history while a PR waits for days."""
        async with on_the_host(f"reading #{inp.number}"):
            forge = self._forge(inp.forge)
            view = await forge.read(
                inp.number, inp.target_branch, frozenset(inp.known), inp.forge.require_checks
            )
        view.digest = digest(view)
        if inp.unchanged_since is not None and view.digest == inp.unchanged_since:
            raise ApplicationError(f"nothing new on #{inp.number}", type=NOTHING_NEW)
        return view

    @activity.defn(name=WITHDRAW_PR.name)
    async def withdraw(self, inp: WithdrawIn) -> WithdrawOut:
        async with on_the_host(f"taking #{inp.number} back from the {inp.handed_to}"):
            forge = self._forge(inp.forge)
            return WithdrawOut(withdrawn=await forge.withdraw(inp.number, inp.handed_to))

    @activity.defn(name=CLOSE_PR.name)
    async def close_pr(self, inp: ClosePrIn) -> ClosePrOut:
        async with on_the_host(f"closing #{inp.number}"):
            return ClosePrOut(closed=await self._forge(inp.forge).close(inp.number, inp.why))

    @activity.defn(name=MERGE_PR.name)
    async def merge_pr(self, inp: MergePrIn) -> MergePrOut:
        async with on_the_host(f"merging #{inp.number}"):
            return await self._merge(inp)

    async def _merge(self, inp: MergePrIn) -> MergePrOut:
        forge = self._forge(inp.forge)
        try:
            pr = await forge.merge(
                inp.number, inp.head_sha, inp.forge.merge_method, inp.title, inp.message
            )
        except ForgeError as exc:
            if isinstance(exc, RateLimited) or exc.status not in (405, 409, 422):
                raise
            # Not merged, and why: the task reads the PR again and decides.
            view = await forge.read(inp.number, inp.target_branch)
            if view.pr.merged:  # merged meanwhile (a person, the host's queue)
                return MergePrOut(merged=True, commit=view.pr.merge_commit)
            if view.pr.mergeable is False:
                return MergePrOut(merged=False, reason=str(exc), conflict=True)
            if exc.status != 405 or view.pr.head_sha != inp.head_sha:
                return MergePrOut(merged=False, reason=str(exc))  # the head moved: read again
            # Branch protection: the host merges it once that is satisfied.
            try:
                handed = await forge.hand_over(
                    view.pr, inp.forge.merge_method, inp.title, inp.message
                )
            except RateLimited:
                raise
            except ForgeError as refused:
                # No auto-merge here (a repository setting), or a refusal of the moment (a
                # target that moved): not merged, and the task tries again later.
                return MergePrOut(merged=False, reason=f"{exc}; {refused}")
            return MergePrOut(merged=False, reason=str(exc), handed_to=handed)
        if pr.merged:
            return MergePrOut(merged=True, commit=pr.merge_commit)
        return MergePrOut(merged=False, reason="closed without merging")
