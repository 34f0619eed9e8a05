"""Second pass: read the fields out of a task's or a batch's own lines."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

from autonomous_pipeline.models.plan import Check, CheckKind, FileRef, PlanIssue
from autonomous_pipeline.models.sandbox import EXECUTION_MODES, SandboxKind, sandbox_for_mode
from autonomous_pipeline.plan_format.fields import (
    Field,
    batch_dependencies,
    execution_mode,
    field_label,
    file_refs,
    status_is_done,
    task_dependencies,
    verification_step,
)
from autonomous_pipeline.plan_format.lines import Line

_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d+[.)])\s+(?:\[[ xX]\]\s+)?(.*)$")
_CHECKBOX = re.compile(r"^\s*[-*+]\s+\[[ xX]\]\s+(.*)$")


@dataclass
class Fields:
    files: list[FileRef] = field(default_factory=list)
    steps: list[Check] = field(default_factory=list)
    depends_on: list[str] | None = None  # None: no dependency field at all
    depends_line: int = 0
    status_done: bool = False
    execution_mode: str | None = None
    sandbox: SandboxKind | None = None  # what the execution mode names
    commit_message: str | None = None
    criteria: list[str] = field(default_factory=list)  # batch-level checklist items
    errors: list[PlanIssue] = field(default_factory=list)


def read_fields(body: list[Line], *, batch_level: bool = False) -> Fields:
    """Interpret `**Label:**` sections. Text under no known label is left to the instructions."""
    out = Fields()
    current: Field | None = None
    fence: list[Line] | None = None
    step_indent = -1

    def add_step(text: str, line: int) -> None:
        if text.strip():
            out.steps.append(verification_step(text, line))

    def close_fence(block: list[Line]) -> None:
        code = textwrap.dedent("\n".join(x.text for x in block[1:])).strip()
        if current is Field.VERIFICATION and code:
            out.steps.append(
                Check.model_construct(text=code, kind=CheckKind.COMMAND, line=block[0].no)
            )

    for ln in body:
        if fence is not None:
            if ln.fence_end:
                close_fence(fence)
                fence = None
            else:
                fence.append(ln)
            continue
        if ln.fence_start:
            fence = [ln]
            continue
        if ln.level:
            current = None
            continue
        label = field_label(ln.text)
        if label:
            current, value = label
            _inline(out, current, value, ln.no, batch_level)
            step_indent = -1
            continue
        if ln.blank:
            continue
        item = _ITEM.match(ln.text)
        if batch_level and (cb := _CHECKBOX.match(ln.text)):
            out.criteria.append(cb.group(1).strip())
            continue
        if current is Field.FILES and item:
            refs, errs = file_refs(item.group(2), ln.no)
            out.files += refs
            out.errors += errs
        elif current is Field.VERIFICATION:
            if item:
                add_step(item.group(2), ln.no)
                step_indent = len(item.group(1))
            elif out.steps and ln.indent > step_indent >= 0:
                # A wrapped bullet: the continuation belongs to the step above it.
                last = out.steps.pop()
                add_step(f"{last.text} {ln.text.strip()}", last.line)
            else:
                add_step(ln.text, ln.no)
        elif current is Field.DEPENDS and item:
            _inline(out, Field.DEPENDS, item.group(2), ln.no, batch_level)
    if fence is not None:  # unclosed: it ran to the end of the section
        close_fence(fence)
    if batch_level:
        out.criteria += [s.text for s in out.steps]
        out.steps = []
    return out


def _inline(out: Fields, kind: Field, value: str, line: int, batch_level: bool) -> None:
    if kind is Field.FILES and value:
        refs, errs = file_refs(value, line)
        out.files += refs
        out.errors += errs
    elif kind is Field.VERIFICATION and value:
        out.steps.append(verification_step(value, line))
    elif kind is Field.DEPENDS:
        reader = batch_dependencies if batch_level else task_dependencies
        ids, errs = reader(value, line)
        out.depends_on = (out.depends_on or []) + ids
        out.depends_line = out.depends_line or line
        out.errors += errs
    elif kind is Field.STATUS:
        out.status_done = out.status_done or status_is_done(value)
    elif kind is Field.EXECUTION_MODE and out.execution_mode is None:
        out.execution_mode = execution_mode(value)
        if out.execution_mode is not None:
            out.sandbox = sandbox_for_mode(out.execution_mode)
            if out.sandbox is None:
                known = ", ".join(EXECUTION_MODES)
                out.errors.append(
                    PlanIssue(
                        line=line,
                        message=f"unknown execution mode {out.execution_mode!r}: use one of {known}",
                    )
                )
    elif kind is Field.COMMIT and value and out.commit_message is None:
        out.commit_message = value.strip().strip("`").strip()


def instructions(body: list[Line]) -> str:
    """The task's own text, as the agent will read it."""
    texts = [ln.text for ln in body]
    # A trailing horizontal rule separates sections in the file; it is not part of the task.
    while texts and (not texts[-1].strip() or texts[-1].strip() in ("---", "***", "___")):
        texts.pop()
    return textwrap.dedent("\n".join(texts)).strip("\n")


def files_from_title(title: str, line: int) -> list[FileRef]:
    """A checklist title such as `Create \\`personas/x.yaml\\`` names the file it creates."""
    if "`" not in title:
        return []
    refs, _ = file_refs(title, line, require_verb=True)
    return refs
