"""A plan revision, checked and applied: pure functions of the run's plan, its tasks' states and
the revised plan, so the run's update validator, its handler and their tests share one answer.

The rules: new tasks are added with their dependencies; tasks not started yet whose text changed
run with the new text; tasks removed from the plan and not started end skipped ("removed from the
plan"); running and ended tasks are kept as they are, and the reply says so, task by task. Merged
work is never redone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autonomous_pipeline.models.plan import Plan, PlanIssue, Task
from autonomous_pipeline.models.results import TaskResult, TaskStatus
from autonomous_pipeline.models.revision import ChangeKind, RevisionReply, TaskChange
from autonomous_pipeline.models.sandbox import SandboxKind
from autonomous_pipeline.plan_format import checks
from autonomous_pipeline.workflows.schedule import Schedule
from autonomous_pipeline.workflows.steering import ended

REMOVED = "removed from the plan"
_FAILING = frozenset(s for s in TaskStatus if s.terminal and not s.satisfies_dependants)
# What a task's text is: everything the plan says of it but where it stands in the file.
_NOT_TEXT: Any = {
    "line": True,
    "done": True,
    "files": {"__all__": {"line"}},
    "verification": {"__all__": {"line"}},
}


def refusals(
    current: Plan,
    tasks: dict[str, TaskResult],
    revised: Plan,
    outside: frozenset[str] = frozenset(),
) -> list[PlanIssue]:
    """Why `revised` cannot replace `current` in a run whose tasks stand as `tasks`: the parser's
    own checks (ids, unknown dependencies, cycles) and what only the run knows (a dependency on a
    task the revision removes, an id the run spells otherwise). `outside`: the file's tasks the
    batch selection leaves out (a dependency on one is met). Empty when it can."""
    issues = checks.check_ids(revised.batches, revised.done_elsewhere)
    known = {t.lower(): t for t in tasks}
    new_ids = {t.id.lower() for t in revised.tasks}
    elsewhere = {t.lower() for t in outside} | {t.id.lower() for t in revised.done_elsewhere}
    for t in revised.tasks:
        spelled = known.get(t.id.lower())
        if spelled is not None and spelled != t.id:
            issues.append(
                PlanIssue(
                    line=t.line,
                    message=f"task {t.id} is task {spelled} in this run; keep its spelling",
                )
            )
        for dep in t.depends_on:
            if dep.lower() not in new_ids | elsewhere and dep.lower() not in known:
                issues.append(
                    PlanIssue(line=t.line, message=f"task {t.id} depends on unknown task {dep!r}")
                )
            gone = known.get(dep.lower()) if dep.lower() not in new_ids else None
            # A dependency that has merged is met, in the plan or not; one that has not never
            # would be, and its dependants would run without it.
            if gone is not None and not tasks[gone].status.satisfies_dependants:
                issues.append(
                    PlanIssue(
                        line=t.line,
                        message=(
                            f"task {t.id} depends on task {known[dep.lower()]}, which this "
                            "revision removes from the plan"
                        ),
                    )
                )
    old_batches = {b.id.lower(): b for b in current.batches}
    new_batches = {b.id.lower() for b in revised.batches}
    for b in revised.batches:
        for dep in b.depends_on:
            if dep.lower() not in new_batches and dep.lower() not in old_batches:
                issues.append(
                    PlanIssue(line=b.line, message=f"batch {b.id} depends on unknown batch {dep!r}")
                )
            batch = old_batches.get(dep.lower()) if dep.lower() not in new_batches else None
            met = batch is not None and all(
                tasks[t.id].status.satisfies_dependants for t in batch.tasks if t.id in tasks
            )
            if batch is not None and not met:
                issues.append(
                    PlanIssue(
                        line=b.line,
                        message=(
                            f"batch {b.id} depends on batch {batch.id}, which "
                            "this revision removes from the plan"
                        ),
                    )
                )
    if not issues:
        issues = checks.cycles(revised.batches)
    return sorted(issues, key=lambda i: i.line)


def refused_message(plan_file: str, issues: list[PlanIssue]) -> str:
    """`PLAN.md:LINE: message`, a line per problem, as the parser's errors read."""
    lines = [f"{plan_file}:{i.line}: {i.message}" for i in issues]
    return "\n".join(lines) + "\nthe revision was refused; the run goes on unchanged"


@dataclass
class Applied:
    """A revision's effect on the run."""

    results: dict[str, TaskResult]  # every task, in the revised plan's order, removed ones last
    changes: list[TaskChange]
    # Running tasks whose agent has not started: they end now, to read as given (a changed one
    # goes back to pending and starts again with its new text).
    hold_back: dict[str, tuple[TaskStatus, str]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)  # tasks now outside the plan


def _text(task: Task, plan: Plan) -> tuple[Any, ...]:
    batch = next((b for b in plan.batches if b.id == task.batch_id), None)
    return (task.model_dump(exclude=_NOT_TEXT), batch.sandbox if batch else None)


def pin_sandboxes(current: Plan, revised: Plan, default: SandboxKind) -> Plan:
    """`revised` with each batch where the run put it: a batch the run has keeps its sandbox (the
    starter of a revision fills batches in from its own flags, not the run's); a new batch runs
    where the plan says, or in the run's own sandbox."""
    kept = {b.id.lower(): b.sandbox for b in current.batches}
    batches = [
        b.model_copy(
            update={"sandbox": kept.get(b.id.lower(), b.sandbox if b.execution_mode else default)}
        )
        for b in revised.batches
    ]
    return revised.model_copy(update={"batches": batches})


def apply(
    current: Plan,
    tasks: dict[str, TaskResult],
    revised: Plan,
    unstarted: set[str],
    rerun_done: bool = False,
    merged_before: frozenset[str] = frozenset(),
) -> Applied:
    """The run's tasks after `revised` replaces `current`. `unstarted`: running tasks whose agent
    has not started (prepared ahead, waiting for a slot); they count as not started.
    `merged_before`: tasks an earlier run of the plan merged (done before, for real)."""
    old, new = Schedule(current, rerun_done), Schedule(revised, rerun_done)
    out = Applied(results={}, changes=[])
    tasks = {t: r.model_copy() for t, r in tasks.items()}  # the run's own change only as applied
    revived: list[str] = []

    def held(tid: str) -> bool:
        """Whether a dependency of `tid` in the revised plan has ended without success."""
        return any(
            (d := tasks.get(dep)) is not None and d.status in _FAILING for dep in new.deps[tid]
        )

    def change(tid: str, kind: ChangeKind, message: str) -> None:
        out.changes.append(TaskChange(task=tid, kind=kind, message=message))

    for tid in new.order:
        task = new.tasks[tid]
        r = tasks.get(tid)
        waits = f"; it waits for {', '.join(new.deps[tid])}" if new.deps[tid] else ""
        if r is None:
            done = tid in new.initially_done
            status = TaskStatus.DONE_BEFORE if done else TaskStatus.PENDING
            out.results[tid] = TaskResult(id=tid, title=task.title, status=status)
            said = ", marked done: it will not run" if done else waits
            change(tid, ChangeKind.ADDED, f"task {tid} is added{said}")
            continue
        out.results[tid] = r
        before = old.tasks.get(tid)
        if before is None:  # removed by an earlier revision, and back
            done = tid in new.initially_done
            if tid in unstarted:  # its removal has not landed yet: it is held back as pending
                out.hold_back[tid] = (
                    (TaskStatus.DONE_BEFORE, "marked done in the plan")
                    if done
                    else (TaskStatus.PENDING, "")
                )
                change(tid, ChangeKind.ADDED, f"task {tid} is back in the plan{waits}")
            elif r.status is TaskStatus.SKIPPED and r.error == REMOVED:
                status = TaskStatus.DONE_BEFORE if done else TaskStatus.PENDING
                out.results[tid] = TaskResult(id=tid, title=task.title, status=status)
                change(tid, ChangeKind.ADDED, f"task {tid} is back in the plan{waits}")
            else:
                change(tid, ChangeKind.KEPT, f"task {tid} is back in the plan; it {_kept(r)}")
            continue
        text_changed = _text(before, current) != _text(task, revised)
        deps_changed = set(old.deps.get(tid, [])) != set(new.deps[tid])
        marked = tid in new.initially_done and tid not in old.initially_done
        unmarked = (
            tid in old.initially_done
            and tid not in new.initially_done
            and r.status is TaskStatus.DONE_BEFORE
            and tid not in merged_before
        )
        if not (text_changed or deps_changed or marked or unmarked):
            continue
        if unmarked:  # done by the plan's word alone, never run here: it runs now
            r.status, r.title = TaskStatus.PENDING, task.title
            change(tid, ChangeKind.CHANGED, f"task {tid} is no longer marked done; it runs{waits}")
            continue
        if marked and r.status in _FAILING:
            # Ended without success, and now done by the operator's word (fixed by hand): its
            # dependants held back by it get their chance.
            r.status, r.error, r.blocked_by = TaskStatus.DONE_BEFORE, None, None
            change(tid, ChangeKind.MARKED_DONE, f"task {tid} is marked done; its dependants run")
            revived.append(tid)
            continue
        if r.status is TaskStatus.PENDING or tid in unstarted:
            if tid in unstarted:
                out.hold_back[tid] = (
                    (TaskStatus.DONE_BEFORE, "marked done in the plan")
                    if marked
                    else (TaskStatus.PENDING, "")
                )
            if marked:
                if tid not in unstarted:
                    r.status, r.error = TaskStatus.DONE_BEFORE, None
                change(tid, ChangeKind.MARKED_DONE, f"task {tid} is marked done; it will not run")
                continue
            r.title = task.title
            what = "its new text" if text_changed else "its new dependencies"
            again = " (its agent had not started; it starts again)" if tid in unstarted else ""
            change(tid, ChangeKind.CHANGED, f"task {tid} runs with {what}{again}{waits}")
        elif (
            r.status is TaskStatus.SKIPPED
            and r.blocked_by is not None
            and deps_changed
            and not held(tid)
        ):
            # It never started: held back by a dependency that failed, which may no longer hold it.
            r.status, r.error, r.blocked_by, r.title = TaskStatus.PENDING, None, None, task.title
            change(tid, ChangeKind.CHANGED, f"task {tid} runs with its new dependencies{waits}")
            revived.append(tid)
        else:
            change(tid, ChangeKind.KEPT, f"task {tid} changed, but it {_kept(r)}")
    # The tasks skipped behind a revived one get their chance with it (those still held back by
    # another failure are skipped again at once), as after a retry.
    named = {c.task for c in out.changes}
    for tid in revived:
        for dep in new.dependants(tid):
            d = out.results[dep]
            if d.status is TaskStatus.SKIPPED and d.blocked_by is not None and not held(dep):
                d.status, d.error, d.blocked_by = TaskStatus.PENDING, None, None
                if dep not in named:
                    named.add(dep)
                    change(dep, ChangeKind.CHANGED, f"task {dep} runs again after {tid}")
    for tid, r in tasks.items():
        if tid in out.results:
            continue
        out.results[tid] = r
        out.removed.add(tid)
        if tid not in old.tasks:  # removed by an earlier revision: nothing new to say
            continue
        if r.status is TaskStatus.PENDING or tid in unstarted:
            if tid in unstarted:  # it reads so once its preparation has stopped
                out.hold_back[tid] = (TaskStatus.SKIPPED, REMOVED)
            else:
                r.status, r.error = TaskStatus.SKIPPED, REMOVED
            change(tid, ChangeKind.REMOVED, f"task {tid} is {REMOVED}; it will not run")
        else:
            change(tid, ChangeKind.KEPT, f"task {tid} is {REMOVED}, but it {_kept(r, True)}")
    return out


def _kept(r: TaskResult, removed: bool = False) -> str:
    if r.status is TaskStatus.RUNNING:
        return "is running: it goes on as it started (skip it to stop it)"
    if r.status.satisfies_dependants:
        return f"has ended {ended(r)}: merged work is never redone"
    if removed:
        return f"has ended {ended(r)}: kept as it ended"
    return f"has ended {ended(r)}: kept as it is (`retry` runs the new text; `[x]` marks it done)"


def reply(revision: int, changes: list[TaskChange], same: bool = False) -> RevisionReply:
    """`same`: the plan file reads as the run's plan already does."""
    if same:
        return RevisionReply(revision=revision, message="the plan is unchanged")
    if not changes:
        return RevisionReply(
            revision=revision, message=f"revision {revision}: no task changed (it is recorded)"
        )
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.kind.value] = counts.get(c.kind.value, 0) + 1
    said = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
    return RevisionReply(revision=revision, changes=changes, message=f"revision {revision}: {said}")


# What a continued run carries of an ended task's output: enough to report it (the failing check's
# last lines stay); the rest is in the task's own workflow. The run's input stays under 2 MiB.
CARRIED_TAIL = 2000


# A lean carry: what scheduling and the final report's lines need of an ended task.
_LEAN = {
    "id", "title", "status", "commit", "attempts", "duration_s", "error", "phase", "agent_runs",
    "review_rounds", "workflow_id", "branch", "clone", "blocked_by", "pull_request", "sandbox",
    "cost_usd", "tokens_in", "tokens_out",
}  # fmt: skip


def carried(r: TaskResult, lean: bool = False) -> TaskResult:
    """`lean`: only what scheduling and the final report's lines need (a run of many tasks)."""
    if not r.status.terminal:
        return r
    if lean:
        kept = r.model_dump(include=_LEAN)
        return TaskResult.model_validate(kept | {"error": (r.error or "")[:CARRIED_TAIL] or None})
    checks = [c.model_copy(update={"output_tail": c.output_tail[-CARRIED_TAIL:]}) for c in r.checks]
    if r.status.satisfies_dependants:  # succeeded: its checks passed, its diff is on the target
        checks = [c.model_copy(update={"output_tail": ""}) for c in checks]
    return r.model_copy(
        update={
            "checks": checks,
            "diffstat": r.diffstat[:CARRIED_TAIL],
            "summary": r.summary[:CARRIED_TAIL],
            "permission_denials": r.permission_denials[:20],
        }
    )
