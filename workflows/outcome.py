"""How a run and a task say how they ended: a failed workflow carrying its result, the one-line
outcome, and the memo that keeps the run's state readable without a worker. Pure."""

from __future__ import annotations

from typing import TypeVar

from temporalio.exceptions import ApplicationError

from autonomous_pipeline.models.results import (
    MemoTask,
    PlanResult,
    ProgressMemo,
    RunStatus,
    TaskCount,
    TaskResult,
    TaskStatus,
)

# Failure types of a run and a task that did not succeed; their first detail is the result.
RUN_FAILED = "RunFailed"
TASK_FAILED = "TaskFailed"

# Tasks the memo lists one by one (the rest are counted), and how much of each error: the memo
# is written once per task that ends, so its size multiplies into the run's history.
MEMO_TASKS = 10
MEMO_ERROR_CHARS = 160

# The two results a failure of ours carries.
M = TypeVar("M", PlanResult, TaskResult)


def result_of(exc: BaseException | None, kind: str, model: type[M]) -> M | None:
    """The result a failed workflow of ours carried in its failure, or None for another failure."""
    if not isinstance(exc, ApplicationError) or exc.type != kind or not exc.details:
        return None
    detail = exc.details[0]
    if isinstance(detail, model):
        return detail
    try:
        return model.model_validate(detail)
    except ValueError:
        return None


def counts(tasks: list[TaskResult]) -> dict[TaskStatus, int]:
    out: dict[TaskStatus, int] = {}
    for t in tasks:
        out[t.status] = out.get(t.status, 0) + 1
    return out


def counts_text(tasks: list[TaskResult]) -> str:
    return ", ".join(f"{n} {s.value}" for s, n in sorted(counts(tasks).items()))


def outcome_line(result: PlanResult) -> str:
    """One line: how the run ended and why ("failed: 2 of 5 tasks failed (2.1, 2.3)")."""
    bad = [t for t in result.tasks if t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)]
    line = f"{result.status.value}: {counts_text(result.tasks)}"
    if bad:
        ids = ", ".join(t.id for t in bad[:10]) + (", ..." if len(bad) > 10 else "")
        line += f" (not done: {ids})"
    if result.message:
        line += f"; {result.message}"
    return line


def _not_done(t: TaskResult) -> bool:
    """Ended without success: what a person looks at first."""
    return t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.SKIPPED)


def progress_memo(
    status: RunStatus,
    results: dict[str, TaskResult],
    paused: bool,
    cancelling: bool,
    target_commit: str | None,
) -> ProgressMemo:
    ended = [t for t in results.values() if t.status.terminal]
    notable = [t for t in ended if _not_done(t)]
    slim = [
        MemoTask(
            id=t.id,
            title=t.title[:80],
            status=t.status,
            commit=t.commit,
            error=(t.error or "")[:MEMO_ERROR_CHARS] or None,
            workflow_id=t.workflow_id,
            blocked_by=t.blocked_by,
        )
        for t in notable[:MEMO_TASKS]
    ]
    return ProgressMemo(
        status=status,
        paused=paused,
        cancelling=cancelling,
        target_commit=target_commit,
        total=len(results),
        counts=[TaskCount(status=s, count=n) for s, n in sorted(counts(ended).items())],
        tasks=slim,
        more_tasks=max(0, len(notable) - MEMO_TASKS),
        total_cost_usd=round(sum(t.cost_usd for t in ended), 10),
    )
