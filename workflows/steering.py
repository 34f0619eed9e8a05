"""Whether a steering request can take effect, and in what words: pure, so the run's update
validator and its tests share one answer. A refusal is a sentence the operator reads as is."""

from __future__ import annotations

from dataclasses import dataclass

from autonomous_pipeline.models.results import TaskResult, TaskStatus
from autonomous_pipeline.models.steer import SteerKind, SteerRequest

# Ended tasks that a retry cannot improve on.
_SUCCEEDED = (TaskStatus.MERGED, TaskStatus.ON_TARGET, TaskStatus.NO_OP, TaskStatus.DONE_BEFORE)
_RETRYABLE = (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.SKIPPED)


@dataclass(frozen=True)
class RunState:
    tasks: dict[str, TaskResult]
    paused: bool
    cancelling: bool
    cancel_now: bool
    merging: frozenset[str]
    budget_spent: bool
    finished: bool
    started: bool = True  # the run has read its input
    removed: frozenset[str] = frozenset()  # tasks a revision took out of the plan


def find_task(tasks: dict[str, TaskResult], raw: str) -> str | None:
    """The run's own spelling of a task id the operator typed (ids compare without case). The
    run applies requests with this same function, so an id the validator finds is the one the
    run acts on."""
    return next((t for t in tasks if t.lower() == raw.lower()), None)


def ended(r: TaskResult) -> str:
    return r.status.value + (f" at {r.commit[:12]}" if r.commit else "")


def refusal(state: RunState, req: SteerRequest) -> str | None:
    """Why `req` cannot take effect now, or None when it can."""
    if not state.started:
        return "the run has not started yet; ask again in a moment"
    if state.finished:
        return "the run is ending; nothing can change now"
    kind = req.kind
    if kind is SteerKind.PAUSE:
        if state.cancelling:
            return "the run is being cancelled"
        return "the run is already paused" if state.paused else None
    if kind is SteerKind.RESUME:
        return None if state.paused else "the run is not paused"
    if kind is SteerKind.CANCEL:
        if state.cancelling and (state.cancel_now or not req.now):
            return "the run is already being cancelled"
        return None
    if not req.task:
        return f"{kind.value} needs a task id"
    tid = find_task(state.tasks, req.task)
    if tid is None:
        known = ", ".join(list(state.tasks)[:20]) + (", ..." if len(state.tasks) > 20 else "")
        return f"this run has no task {req.task!r} (its tasks: {known})"
    r = state.tasks[tid]
    if state.cancel_now:
        return "the run is being cancelled now; every task that has not ended ends cancelled"
    if kind is SteerKind.SKIP:
        if r.status.terminal:
            return f"task {tid} has already ended: {ended(r)}"
        if tid in state.merging:
            return f"task {tid} is merging; it can no longer be skipped"
        return None
    # retry
    if tid in state.removed:
        return (
            f"task {tid} was removed from the plan; put it back in the plan file and run the "
            "same command again"
        )
    if r.status is TaskStatus.PENDING:
        return f"task {tid} has not started yet; it will run when its dependencies allow"
    if r.status is TaskStatus.RUNNING:
        return f"task {tid} is still running" + (" (merging)" if tid in state.merging else "")
    if r.status in _SUCCEEDED:
        return f"task {tid} has already ended: {ended(r)}; there is nothing to retry"
    if state.cancelling:
        return "the run is being cancelled; no task starts again"
    if state.budget_spent:
        return "the run's budget is spent; no task starts again"
    held = state.tasks.get(r.blocked_by or "")
    if held is not None and held.status.terminal and not held.status.satisfies_dependants:
        # It would be skipped again at once: the task to retry is the one that held it back.
        return (
            f"task {tid} was held back by task {held.id}, which ended {ended(held)}; retry {held.id} "
            "and the tasks it held back run with it"
        )
    return None


def accepted(state: RunState, req: SteerRequest) -> str:
    """What an accepted request does, in the operator's words."""
    kind = req.kind
    if kind is SteerKind.PAUSE:
        return "the run is paused: running tasks go on, no new task starts until `resume`"
    if kind is SteerKind.RESUME:
        return "the run goes on"
    if kind is SteerKind.CANCEL:
        if req.now:
            return "the run is being cancelled: running agents are stopped, no task starts"
        return "the run is being cancelled: running tasks finish, no new task starts"
    tid = find_task(state.tasks, req.task or "") or req.task
    r = state.tasks.get(tid or "")
    if kind is SteerKind.SKIP:
        if r is not None and r.status is TaskStatus.RUNNING:
            return f"task {tid} is being stopped, and will end skipped"
        return f"task {tid} will not run; it ends skipped"
    return f"task {tid} will run again, and the tasks it held back with it"
