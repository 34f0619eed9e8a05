"""The code host (forge) as the workflows see it: pull requests, what people said on them, their
checks. Data only; the backends (backends.forges) speak to the host."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from autonomous_pipeline.models.review import Finding, Verdict

# A forge call refused for the API's rate limit (activities.forge): not retried by the activity,
# waited out by the task on a durable timer. Details: (seconds until the limit resets,).
RATE_LIMITED = "ForgeRateLimited"
# The task's branch moved on the host since the pipeline pushed it (a person pushed to it):
# the pipeline neither overwrites nor merges what it did not check.
BRANCH_MOVED = "TaskBranchMoved"
# A watch of a pull request that found nothing new: retried by the server every poll, which
# leaves nothing in the task's history until something changes (see workflows.pull_request).
NOTHING_NEW = "NothingNewOnThePullRequest"


class Publish(StrEnum):
    PUSH = "push"  # merge into the target branch of the repository and push it (the default)
    PR = "pr"  # push the task's branch and open a pull request; merge it through the code host


class MergeMethod(StrEnum):
    MERGE = "merge"
    SQUASH = "squash"  # one commit per task, carrying the task's trailer
    REBASE = "rebase"


class ForgeConfig(BaseModel):
    """Which code host, and how a run uses it. No token here: the worker reads it (GITHUB_TOKEN)."""

    kind: str = "github"  # a backend of backends.forges
    api_url: str = "https://api.github.com"
    repository: str  # owner/name on the host
    merge_method: MergeMethod = MergeMethod.SQUASH
    require_checks: bool = False
    poll_s: float = 30.0  # how often the task reads its pull request for news
    web_ui: str | None = None  # the run's page in the Temporal Web UI, for the PR's body


class PullRequest(BaseModel):
    number: int
    url: str  # its page for people
    head_branch: str
    head_sha: str
    open: bool
    merged: bool = False
    merge_commit: str | None = None
    mergeable: bool | None = None  # None: the host has not computed it yet
    closed_by: str | None = None
    node_id: str = ""  # the host's global id (GitHub's GraphQL names the PR by it)


class EventKind(StrEnum):
    """What a person asks of the task, by a comment command or a review."""

    FIX = "fix"  # `/fix words`, or a review requesting changes: a fix round with their words
    APPROVE = "approve"  # `/approve`, or an approving review: satisfies --approval
    SKIP = "skip"  # `/skip`: the task ends skipped


class PrEvent(BaseModel):
    """Something a person with write access said on the pull request."""

    id: str  # unique on the PR across comments and reviews: acted on once
    kind: EventKind
    author: str
    body: str = ""  # the words after the command, or the review's body
    findings: list[Finding] = Field(default_factory=list)  # a review's comments on lines
    commit: str | None = None  # the head a review was given on (a comment names none)
    at: str = ""  # when, as the host says (ISO 8601, UTC)


class CheckState(StrEnum):
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"


class PrCheck(BaseModel):
    name: str
    state: CheckState
    url: str | None = None  # its output, for the fix agent and for people


class PrView(BaseModel):
    """A pull request as it stands, with what people said on it and its checks."""

    pr: PullRequest
    events: list[PrEvent] = Field(default_factory=list)
    checks: list[PrCheck] = Field(default_factory=list)
    # Check names branch protection requires; empty: every check reported on the head.
    required: list[str] = Field(default_factory=list)
    digest: str = ""  # of what a task acts on in it (activities.forge): "has anything changed"


# --- activity inputs and outputs ---


class PushBranchIn(BaseModel):
    run_key: str
    task_id: str
    repo: str
    commit: str
    # What the pipeline pushed last: the push replaces only that (someone else's commit on
    # the branch is never overwritten). None: the task's first push, which takes the branch.
    expected: str | None = None


class PushBranchOut(BaseModel):
    branch: str  # on the repository's remote
    commit: str


class OpenPrIn(BaseModel):
    forge: ForgeConfig
    branch: str
    target_branch: str
    title: str
    body: str
    # When this try of the task began (ISO 8601): a PR of the branch a person closed before
    # it is an earlier try's, and a new one is opened; one closed since is this try's answer.
    not_before: str = ""


class ReviewPostIn(BaseModel):
    forge: ForgeConfig
    number: int
    commit: str  # the head the verdict is about: posted once per commit
    verdict: Verdict


class ReviewPostOut(BaseModel):
    posted: bool  # False: that verdict was on the PR already


class ReadPrIn(BaseModel):
    forge: ForgeConfig
    number: int
    target_branch: str  # whose protection names the required checks
    # The digest of the view the task has acted on: a read that finds the same fails with
    # NOTHING_NEW, to be tried again a poll later. None: answer whatever it finds.
    unchanged_since: str | None = None
    known: list[str] = Field(default_factory=list)  # events acted on: their details not fetched


class MergePrIn(BaseModel):
    forge: ForgeConfig
    number: int
    target_branch: str
    head_sha: str  # merged only if the head is still this
    title: str
    message: str  # carries the task's trailer


class MergePrOut(BaseModel):
    merged: bool
    commit: str | None = None
    # Why not: the head moved, a conflict, branch protection; for the task's result.
    reason: str | None = None
    conflict: bool = False
    # Branch protection would not let it merge now: handed to the host's auto-merge or its
    # merge queue, which merges it once the protection is satisfied ("auto-merge", "merge queue").
    handed_to: str | None = None


class ClosePrIn(BaseModel):
    forge: ForgeConfig
    number: int
    why: str  # posted as a comment before it is closed


class ClosePrOut(BaseModel):
    closed: bool  # False: it was closed or merged already


class WithdrawIn(BaseModel):
    forge: ForgeConfig
    number: int
    handed_to: str  # "auto-merge" or "merge queue": what to take it back from


class WithdrawOut(BaseModel):
    withdrawn: bool  # False: the host held it no longer
