"""First pass: which lines belong to which batch and task. No field is interpreted here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from autonomous_pipeline.models.plan import PlanIssue
from autonomous_pipeline.plan_format.fields import ID, strip_done_marker
from autonomous_pipeline.plan_format.lines import Line

_BATCH = re.compile(rf"^batch\s+({ID})\s*:\s*(.*)$", re.IGNORECASE)
_TASK = re.compile(rf"^(\[[ xX]\]\s*)?task\s+({ID})\s*(?::|\s[-–—])\s*(.*)$", re.IGNORECASE)
_CHECKBOX_TASK = re.compile(
    rf"^(\s*)[-*+]\s+\[([ xX])\]\s+\*\*(?:Task\s+)?({ID})[:.]?\*\*[:.]?\s*(.*)$", re.IGNORECASE
)
# Headers that look structural but are not (wrong level, missing colon): warned about, kept as text.
_NEAR_MISS = re.compile(
    r"^(?:\[[ xX]\]\s*)?(batch|task)\s+([A-Za-z0-9.]*\d[A-Za-z0-9.]*|[A-Za-z])\b", re.I
)


@dataclass
class TaskDraft:
    id: str
    title: str
    line: int
    done: bool
    level: int  # header level; 0 for a checkbox task
    indent: int  # indentation of a checkbox task's bullet
    batch: BatchDraft | None
    body: list[Line] = field(default_factory=list)


@dataclass
class BatchDraft:
    id: str
    title: str
    line: int
    level: int
    done: bool
    body: list[Line] = field(default_factory=list)
    tasks: list[TaskDraft] = field(default_factory=list)


@dataclass
class Outline:
    title: str | None = None
    batches: list[BatchDraft] = field(default_factory=list)
    orphans: list[TaskDraft] = field(default_factory=list)
    warnings: list[PlanIssue] = field(default_factory=list)


def outline(lines: list[Line]) -> Outline:
    """Assign every line to a batch, a task, or nothing.

    A task ends at the next header of its own level or higher (so a batch-level `### Success
    Criteria` after the last task is not part of its prompt); a checklist task ends at the next
    line indented no deeper than its bullet. A batch ends at the next batch header or a header of
    its own level or higher (`## Phase 4` ends `## Batch 10`).
    """
    out = Outline()
    batch: BatchDraft | None = None
    task: TaskDraft | None = None

    def close_task() -> None:
        nonlocal task
        task = None

    for ln in lines:
        if ln.level and not ln.fenced:
            b = _BATCH.match(ln.heading) if ln.level in (2, 3) else None
            t = _TASK.match(ln.heading) if ln.level in (3, 4) else None
            if b:
                close_task()
                title, done = strip_done_marker(b.group(2))
                batch = BatchDraft(b.group(1), title, ln.no, ln.level, done)
                out.batches.append(batch)
                continue
            if t:
                title, done = strip_done_marker(t.group(3))
                task = TaskDraft(
                    t.group(2),
                    title,
                    ln.no,
                    done or bool(t.group(1) and "x" in t.group(1).lower()),
                    ln.level,
                    0,
                    batch,
                )
                (batch.tasks if batch else out.orphans).append(task)
                continue
            _warn_near_miss(ln, out.warnings)
            if ln.level == 1 and out.title is None:
                out.title = ln.heading.strip() or None
            if task and (task.level == 0 or ln.level <= task.level):
                close_task()
            if batch and ln.level <= batch.level:
                batch = None
        elif (
            task
            and task.level == 0
            and not ln.blank
            and ln.indent <= task.indent
            and (not ln.fenced or ln.fence_start)
        ):
            close_task()

        if task:
            task.body.append(ln)
            continue
        c = None if ln.fenced else _CHECKBOX_TASK.match(ln.text)
        if c and batch:
            title, done = strip_done_marker(c.group(4))
            task = TaskDraft(
                c.group(3), title, ln.no, done or c.group(2) != " ", 0, len(c.group(1)), batch
            )
            batch.tasks.append(task)
            continue
        if c and c.group(2) == " ":
            out.warnings.append(
                PlanIssue(
                    line=ln.no,
                    message=f"checklist item **{c.group(3)}** is outside any batch and will not run",
                )
            )
        if batch:
            batch.body.append(ln)
    return out


def _warn_near_miss(ln: Line, warnings: list[PlanIssue]) -> None:
    m = _NEAR_MISS.match(ln.heading)
    if not m:
        return
    kind = m.group(1).lower()
    levels = "## or ###" if kind == "batch" else "### or ####"
    form = "Batch ID: title" if kind == "batch" else "Task ID: title"
    warnings.append(
        PlanIssue(
            line=ln.no,
            message=f"header {ln.text.strip()!r} looks like a {kind} but is not `{levels} {form}`; "
            "it is read as text",
        )
    )
