"""Every activity of the pipeline, named once: its name, its input and its output. Workflows call
them through these (typed), activities register under them, and the test fakes too, so a name is
never a string repeated in several places."""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

from pydantic import BaseModel

from autonomous_pipeline.models.activity_io import (
    ClaimIn,
    ClaimOut,
    ClaimWorkspaceIn,
    ClaimWorkspaceOut,
    CleanupIn,
    CleanupOut,
    ConflictFixIn,
    ConflictFixOut,
    FinishOut,
    MergeIn,
    MergeOut,
    PrepareRunIn,
    PrepareRunOut,
    PrepareWorkspaceIn,
    PrepareWorkspaceOut,
    ReviewIn,
    ReviewOut,
    RunAgentIn,
    RunAgentOut,
    VerifyIn,
    VerifyOut,
)
from autonomous_pipeline.models.forge import (
    ClosePrIn,
    ClosePrOut,
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
from autonomous_pipeline.models.notify import NotifyIn, NotifyOut

A = TypeVar("A", bound=BaseModel)  # an activity's argument
R = TypeVar("R", bound=BaseModel)  # and its result


class ActivityRef(NamedTuple, Generic[A, R]):
    name: str
    arg: type[A]
    result: type[R]


PREPARE_RUN = ActivityRef("prepare_run", PrepareRunIn, PrepareRunOut)
CLAIM_WORKER = ActivityRef("claim_worker", ClaimIn, ClaimOut)
PREPARE_WORKSPACE = ActivityRef("prepare_workspace", PrepareWorkspaceIn, PrepareWorkspaceOut)
RUN_AGENT = ActivityRef("run_agent", RunAgentIn, RunAgentOut)
VERIFY_TASK = ActivityRef("verify_task", VerifyIn, VerifyOut)
REVIEW_TASK = ActivityRef("review_task", ReviewIn, ReviewOut)
PREPARE_CONFLICT_FIX = ActivityRef("prepare_conflict_fix", ConflictFixIn, ConflictFixOut)
MERGE_TASK = ActivityRef("merge_task", MergeIn, MergeOut)
CLEANUP_WORKSPACE = ActivityRef("cleanup_workspace", CleanupIn, CleanupOut)
# Since "fused-steps": a worker claimed with the worktree prepared, and checks, merge and cleanup
# as one step: two round trips to the server per task instead of five.
CLAIM_WORKSPACE = ActivityRef("claim_workspace", ClaimWorkspaceIn, ClaimWorkspaceOut)
FINISH_TASK = ActivityRef("finish_task", MergeIn, FinishOut)

# --publish pr: the task's branch pushed, its pull request opened, read and merged on the host.
PUSH_BRANCH = ActivityRef("push_task_branch", PushBranchIn, PushBranchOut)
OPEN_PR = ActivityRef("open_pull_request", OpenPrIn, PullRequest)
POST_PR_REVIEW = ActivityRef("post_pull_request_review", ReviewPostIn, ReviewPostOut)
READ_PR = ActivityRef("read_pull_request", ReadPrIn, PrView)
MERGE_PR = ActivityRef("merge_pull_request", MergePrIn, MergePrOut)
CLOSE_PR = ActivityRef("close_pull_request", ClosePrIn, ClosePrOut)
# Before a fix round's push: the host must not merge the new head on its own.
WITHDRAW_PR = ActivityRef("withdraw_pull_request_merge", WithdrawIn, WithdrawOut)

# Someone is told of an event (--notify).
NOTIFY = ActivityRef("notify", NotifyIn, NotifyOut)

ALL = (
    PREPARE_RUN,
    CLAIM_WORKER,
    PREPARE_WORKSPACE,
    RUN_AGENT,
    VERIFY_TASK,
    REVIEW_TASK,
    PREPARE_CONFLICT_FIX,
    MERGE_TASK,
    CLEANUP_WORKSPACE,
    CLAIM_WORKSPACE,
    FINISH_TASK,
    PUSH_BRANCH,
    OPEN_PR,
    POST_PR_REVIEW,
    READ_PR,
    MERGE_PR,
    CLOSE_PR,
    WITHDRAW_PR,
    NOTIFY,
)
