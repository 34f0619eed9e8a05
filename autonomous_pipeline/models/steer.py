"""Steering a run: what the operator asks (workflow updates), and what the run answers."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class SteerKind(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY = "retry"
    SKIP = "skip"

    @property
    def needs_task(self) -> bool:
        return self in (SteerKind.RETRY, SteerKind.SKIP)


class SteerRequest(BaseModel):
    kind: SteerKind
    task: str | None = None  # for retry and skip
    now: bool = False  # cancel: also cancel running tasks (their agents are killed)


class SteerReply(BaseModel):
    """An accepted request, in words ("task 1.4 will not start"). A refused one is a failed
    update whose message says why."""

    message: str


class DecideRequest(BaseModel):
    """A person's approval or rejection, sent to the task's own workflow."""

    approved: bool
    token: str  # the operator's signature of this decision, for the commit waiting
    reason: str | None = None


class RunInfo(BaseModel):
    """Set once, when the run starts (the workflow's memo): where it came from."""

    plan: str
    repo: str
    target_branch: str
    # The starter's workspace, when it used the embedded server: where `status` finds the run.
    workspace: str | None = None
