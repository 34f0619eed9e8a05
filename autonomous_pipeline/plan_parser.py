"""parse_plan(text) -> Plan. Pure: no I/O, and every problem is reported with its line.

The grammar is described in README.md ("Plan format"). Errors are collected, never raised one at a
time, so a user fixes a plan in one pass.
"""

from __future__ import annotations

from autonomous_pipeline.errors import PlanError
from autonomous_pipeline.models.plan import Batch, Plan, PlanIssue, Task
from autonomous_pipeline.plan_format import checks
from autonomous_pipeline.plan_format.body import files_from_title, instructions, read_fields
from autonomous_pipeline.plan_format.lines import scan, skip_front_matter
from autonomous_pipeline.plan_format.select import select_batches
from autonomous_pipeline.plan_format.structure import BatchDraft, TaskDraft, outline

__all__ = ["PlanError", "parse_plan", "select_batches"]


def parse_plan(source: str | bytes) -> Plan:
    """Parse a plan. Raises PlanError with every error (and the warnings) when it cannot run."""
    text, decode_error = _decode(source)
    if decode_error:
        raise PlanError([decode_error])
    lines = scan(text)
    shape = outline(lines[skip_front_matter(lines) :])
    errors: list[PlanIssue] = []
    warnings = list(shape.warnings)
    dep_lines: dict[str, int] = {}

    batches: list[Batch] = []
    for i, draft in enumerate(shape.batches):
        batch = _batch(draft, batches[-1] if i else None, errors, dep_lines)
        batches.append(batch)
    orphans = [_task(d, None, errors, dep_lines) for d in shape.orphans]

    if not batches:
        errors.append(
            PlanIssue(
                line=1,
                message="no batches found: a plan needs `## Batch N: title` headers with tasks under them",
            )
        )
    errors += checks.check_ids(batches, orphans)
    errors += checks.check_dependencies(batches, orphans, dep_lines)
    if errors:
        raise PlanError(errors, warnings)

    warnings += checks.overlap_warnings(batches)
    return Plan(
        title=shape.title,
        batches=checks.run_order(batches),
        done_elsewhere=orphans,
        warnings=sorted(warnings, key=lambda w: w.line),
    )


# Batches, tasks, files and checks are built with `model_construct`: every field comes from this
# parser, already of the right type, and validating ten thousand small models again would take most
# of a large plan's parse time. The Plan around them is validated as usual.


def _decode(source: str | bytes) -> tuple[str, PlanIssue | None]:
    if isinstance(source, str):
        return source.removeprefix("\ufeff"), None
    try:
        return source.decode("utf-8").removeprefix("\ufeff"), None
    except UnicodeDecodeError as exc:
        line = source[: exc.start].count(b"\n") + 1
        return "", PlanIssue(
            line=line,
            message=f"the plan is not valid UTF-8 (byte 0x{source[exc.start]:02x} at offset {exc.start})",
        )


def _batch(
    draft: BatchDraft, previous: Batch | None, errors: list[PlanIssue], dep_lines: dict[str, int]
) -> Batch:
    f = read_fields(draft.body, batch_level=True)
    errors += f.errors
    # A duplicate of the previous batch's id is reported as such, not as a batch after itself.
    implicit = (
        f.depends_on is None and previous is not None and previous.id.lower() != draft.id.lower()
    )
    depends_on = [previous.id] if implicit and previous else list(dict.fromkeys(f.depends_on or []))
    if f.depends_line:
        dep_lines["B:" + draft.id] = f.depends_line
    done = draft.done or f.status_done
    tasks = [_task(t, draft.id, errors, dep_lines, batch_done=done) for t in draft.tasks]
    return Batch.model_construct(
        id=draft.id,
        title=draft.title,
        line=draft.line,
        depends_on=depends_on,
        implicit_dependency=implicit,
        execution_mode=f.execution_mode,
        sandbox=f.sandbox,
        tasks=sorted(tasks, key=lambda t: checks.natural_key(t.id)),
        criteria=f.criteria,
    )


def _task(
    draft: TaskDraft,
    batch_id: str | None,
    errors: list[PlanIssue],
    dep_lines: dict[str, int],
    batch_done: bool = False,
) -> Task:
    f = read_fields(draft.body)
    errors += f.errors
    if f.depends_line:
        dep_lines["T:" + draft.id] = f.depends_line
    files = f.files or (files_from_title(draft.title, draft.line) if draft.level == 0 else [])
    return Task.model_construct(
        id=draft.id,
        title=draft.title,
        line=draft.line,
        batch_id=batch_id,
        depends_on=list(dict.fromkeys(f.depends_on or [])),
        done=draft.done or f.status_done or batch_done,
        files=files,
        verification=f.steps,
        instructions=instructions(draft.body),
        commit_message=f.commit_message,
    )
