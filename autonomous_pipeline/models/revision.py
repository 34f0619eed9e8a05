"""A living plan: a revision of a running plan, what the run answers, and what a run carries into
the run that continues it (continue-as-new)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from autonomous_pipeline.models.plan import Plan
from autonomous_pipeline.models.results import TaskResult

# The update that sends a revision; its validator refuses one that could not run.
REVISE = "revise"
# The failure type of a refused revision; its details are the PlanIssues, each with its line.
REVISION_REFUSED = "PlanRevisionRefused"


class PlanRevision(BaseModel):
    """The plan file as it reads now, parsed and selected exactly as a start would."""

    plan: Plan
    # The file's content digest with the batch selection: an equal digest is the same revision.
    digest: str
    # The file as the operator named it: a refusal reads `PLAN.md:LINE: message`.
    plan_file: str
    # The file's tasks outside the batch selection: a dependency on one is met, not unknown.
    outside: list[str] = Field(default_factory=list)


class ChangeKind(StrEnum):
    ADDED = "added"  # new in the plan: runs when its dependencies allow
    CHANGED = "changed"  # not started: runs with the new text
    REMOVED = "removed"  # not started: ends skipped, "removed from the plan"
    MARKED_DONE = "marked_done"  # not started, now `[x]` in the plan: done before
    KEPT = "kept"  # changed or removed, but running or ended: kept as it is


class TaskChange(BaseModel):
    task: str
    kind: ChangeKind
    message: str  # in the operator's words: what happens to the task, and why


class RevisionReply(BaseModel):
    """What a revision did, task by task. An unchanged plan answers with no changes."""

    revision: int  # 0: the plan the run started with
    changes: list[TaskChange] = Field(default_factory=list)
    message: str

    @property
    def unchanged(self) -> bool:
        return not self.changes


class RunCarry(BaseModel):
    """A run's state, carried into the run that continues it when its history grew large: the
    tasks as they ended or wait, and everything the operator has asked that still matters."""

    results: list[TaskResult]
    tries: dict[str, int] = Field(default_factory=dict)
    removed: list[str] = Field(default_factory=list)  # tasks revisions took out of the plan
    revision: int = 0
    paused: bool = False
    budget_spent: bool = False
    target_commit: str | None = None
    continued: int = 0  # runs before this one in the chain
