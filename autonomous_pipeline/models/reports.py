"""What the command line prints with `--json`: one public model per output, dumped by pydantic.

These are contracts: scripts read them. A field is added, never renamed or given another meaning.
A run's report has one schema whether the run is running (asked of its worker), waiting for a
worker (read from its memo) or finished (its result).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from autonomous_pipeline.models.plan import Plan, Task
from autonomous_pipeline.models.results import (
    PlanResult,
    ProgressMemo,
    RunProgress,
    RunStatus,
    TaskResult,
    TaskStatus,
)
from autonomous_pipeline.models.revision import RevisionReply


class RunReport(BaseModel):
    """`status RUN --json`, and the end of a run with `--json`."""

    workflow_id: str
    status: RunStatus
    finished: bool
    # Whether a worker answered for the running run; None once it has finished.
    worker: bool | None = None
    paused: bool = False
    cancelling: bool = False
    target_branch: str | None = None  # None only when read from a memo
    target_commit: str | None = None
    total_cost_usd: float = 0.0
    total_tasks: int
    # How many tasks are in each state: every task; read from a memo (no worker answering),
    # the tasks that have ended (the others are pending or running: total_tasks - their sum).
    counts: dict[TaskStatus, int] = Field(default_factory=dict)
    # Every task; read from a memo: only the first of those that ended without success.
    tasks: list[TaskResult] = Field(default_factory=list)
    tasks_complete: bool = True  # False when `tasks` is the memo's short list
    more_tasks: int = 0  # read from a memo: tasks that ended without success, not listed
    message: str = ""
    note: str = ""  # what to do, when something must be done (start a worker)
    ui_url: str | None = None
    revision: int = 0  # revisions of the plan the run has taken (0: as it started)

    @classmethod
    def finished_run(cls, result: PlanResult, ui_url: str | None = None) -> RunReport:
        return cls._of(result, ui_url, finished=True, message=result.message)

    @classmethod
    def running(cls, progress: RunProgress, ui_url: str | None = None) -> RunReport:
        return cls._of(
            progress,
            ui_url,
            finished=False,
            worker=True,
            paused=progress.paused,
            cancelling=progress.cancelling,
        )

    @classmethod
    def _of(cls, run: PlanResult | RunProgress, ui_url: str | None, **state: Any) -> RunReport:
        return cls(
            workflow_id=run.workflow_id,
            status=run.status,
            target_branch=run.target_branch,
            target_commit=run.target_commit,
            total_cost_usd=run.total_cost_usd,
            total_tasks=len(run.tasks),
            counts=_counts(run.tasks),
            tasks=run.tasks,
            ui_url=ui_url,
            revision=run.revision,
            **state,
        )

    @classmethod
    def from_memo(
        cls,
        workflow_id: str,
        memo: ProgressMemo | None,
        note: str,
        ui_url: str | None = None,
        target_branch: str | None = None,
    ) -> RunReport:
        if memo is None:
            return cls(
                workflow_id=workflow_id,
                status=RunStatus.RUNNING,
                finished=False,
                worker=False,
                total_tasks=0,
                tasks_complete=False,
                note=note,
                ui_url=ui_url,
            )
        return cls(
            workflow_id=workflow_id,
            status=memo.status,
            finished=False,
            worker=False,
            paused=memo.paused,
            cancelling=memo.cancelling,
            target_commit=memo.target_commit,
            total_cost_usd=memo.total_cost_usd,
            total_tasks=memo.total,
            counts={c.status: c.count for c in memo.counts},
            tasks=[t.as_result() for t in memo.tasks],
            tasks_complete=False,
            more_tasks=memo.more_tasks,
            target_branch=target_branch,
            note=note,
            ui_url=ui_url,
        )


def _counts(tasks: list[TaskResult]) -> dict[TaskStatus, int]:
    counts: dict[TaskStatus, int] = {}
    for t in tasks:
        counts[t.status] = counts.get(t.status, 0) + 1
    return counts


class TaskReport(TaskResult):
    """`status RUN TASK --json`: the task whole, and how to fetch its kept branch."""

    fetch_command: str | None = None


class Started(BaseModel):
    """`--detach --json`: the run that was started (or found already running)."""

    workflow_id: str
    target_branch: str
    ui_url: str | None = None
    revision: RevisionReply | None = None  # what the plan's revision changed, for an open run


class SteerAnswer(BaseModel):
    """`pause|resume|cancel|retry|skip|approve|reject --json`."""

    workflow_id: str
    command: str
    task: str | None = None
    accepted: bool
    message: str  # what happened, or why it was refused


class FileReport(BaseModel):
    action: str
    path: str


class TaskPlan(BaseModel):
    id: str
    title: str
    line: int
    depends_on: list[str]
    done: bool
    files: list[FileReport]
    # Both kinds, in the plan's order (the contract since the first version)...
    verification: list[str]
    # ...and told apart: what is run, and what the reviewer judges.
    commands: list[str]
    criteria: list[str]
    instructions: str

    @classmethod
    def of(cls, t: Task) -> TaskPlan:
        return cls(
            id=t.id,
            title=t.title,
            line=t.line,
            depends_on=list(t.depends_on),
            done=t.done,
            files=[FileReport(action=f.action, path=f.path) for f in t.files],
            verification=[c.text for c in t.verification],
            commands=t.commands,
            criteria=t.criteria,
            instructions=t.instructions,
        )


class BatchPlan(BaseModel):
    id: str
    title: str
    line: int
    depends_on: list[str]
    execution_mode: str | None
    sandbox: str | None
    tasks: list[TaskPlan]


class DoneElsewhere(BaseModel):
    id: str
    title: str
    line: int


class PlanWarning(BaseModel):
    line: int
    message: str


class PlanReport(BaseModel):
    """`--dry-run --json`. Ids are strings; batches are in run order."""

    title: str | None
    batches: list[BatchPlan]
    done_elsewhere: list[DoneElsewhere]
    warnings: list[PlanWarning]

    @classmethod
    def of(cls, plan: Plan) -> PlanReport:
        return cls(
            title=plan.title,
            batches=[
                BatchPlan(
                    id=b.id,
                    title=b.title,
                    line=b.line,
                    depends_on=list(b.depends_on),
                    execution_mode=b.execution_mode,
                    sandbox=b.sandbox.value if b.sandbox else None,
                    tasks=[TaskPlan.of(t) for t in b.tasks],
                )
                for b in plan.batches
            ],
            done_elsewhere=[
                DoneElsewhere(id=t.id, title=t.title, line=t.line) for t in plan.done_elsewhere
            ],
            warnings=[PlanWarning(line=w.line, message=w.message) for w in plan.warnings],
        )
