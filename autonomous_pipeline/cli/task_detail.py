"""One task, whole: for `status RUN TASK` and for the failed tasks of an end-of-run summary. What a
person needs to act without opening Temporal's history: the error, the failing checks' last lines,
the transcript, and how to get the kept branch into their own repository."""

from __future__ import annotations

import shlex

from autonomous_pipeline.cli.terminal import safe
from autonomous_pipeline.models.reports import TaskReport
from autonomous_pipeline.models.results import TaskResult, TaskStatus

CHECK_TAIL_LINES = 15


def fetch_command(t: TaskResult, run_key: str, repo: str | None) -> str | None:
    """The command that copies a kept branch from the pipeline's clone into the user's repository,
    under a name of the pipeline's own (it never writes there itself)."""
    if not t.branch or not t.clone:
        return None
    local = f"pipeline/{'failed' if t.status is TaskStatus.FAILED else 'task'}/{run_key}/{t.id}"
    where = f"-C {shlex.quote(repo)} " if repo else ""
    return f"git {where}fetch {shlex.quote(t.clone)} {t.branch}:{local}"


def _tail(text: str, lines: int) -> list[str]:
    return text.rstrip("\n").splitlines()[-lines:]


def detail_lines(t: TaskResult, run_key: str, repo: str | None, brief: bool = False) -> list[str]:
    """The task's lines, printable: much of it is text the agent's work produced."""
    return [safe(line) for line in _lines(t, run_key, repo, brief)]


def _lines(t: TaskResult, run_key: str, repo: str | None, brief: bool) -> list[str]:
    head = f"task {t.id}" + (f" ({t.title})" if t.title else "") + f": {t.status.value}"
    if t.commit:
        head += f" at {t.commit[:12]}"
    facts = []
    if t.attempts:
        facts.append(f"{t.attempts} attempt{'s' if t.attempts != 1 else ''}")
    if t.duration_s:
        facts.append(f"{t.duration_s:.1f}s")
    if t.cost_usd:
        facts.append(f"${t.cost_usd:.2f}")
    if t.review_rounds:
        facts.append(f"{t.review_rounds} review round{'s' if t.review_rounds != 1 else ''}")
    out = [head + (f" ({', '.join(facts)})" if facts else "")]
    if t.pull_request:
        out.append(f"  pull request: {t.pull_request}")
    if t.status is TaskStatus.RUNNING and t.phase:
        out.append(f"  now: {t.phase}")
    if t.error:
        out.append("  error: " + t.error.replace("\n", "\n         "))
    if t.blocked_by:
        out.append(f"  held back by task {t.blocked_by}")
    for c in t.checks if not brief else [c for c in t.checks if not c.passed]:
        mark = "pass" if c.passed else f"FAIL (exit {c.exit_code})"
        note = "; fails on the base too (pre-existing)" if c.pre_existing else ""
        out.append(f"  check {mark}{note}: {c.command}")
        if not c.passed and c.output_tail:
            out += [f"    | {line}" for line in _tail(c.output_tail, CHECK_TAIL_LINES)]
    if t.verdict is not None and not brief:
        out.append(f"  review: {'approved' if t.verdict.approved else 'changes requested'}")
        for f in t.verdict.findings[:10]:
            where = f" {f.file}" + (f":{f.line}" if f.line else "") if f.file else ""
            out.append(f"    - {f.severity.value}{where}: {f.message}")
    if t.changed_total and not brief:
        shown = ", ".join(t.changed_files[:20])
        more = t.changed_total - min(len(t.changed_files), 20)
        out.append(
            f"  changed {t.changed_total} files: {shown}" + (f", +{more}" if more > 0 else "")
        )
    if t.diffstat and not brief:
        out += ["  diffstat:"] + [f"    {line}" for line in t.diffstat.splitlines()]
    if t.approval_commit:
        out.append(f"  waiting for approval of {t.approval_commit[:12]}")
    if t.permission_denials:
        out.append(f"  refused to the agent: {', '.join(t.permission_denials[:5])}")
    if t.transcript:
        out.append(f"  transcript: {t.transcript}")
    if t.branch:
        out.append(f"  branch: {t.branch}" + (f" in {t.clone}" if t.clone else ""))
        cmd = fetch_command(t, run_key, repo)
        if cmd:
            out.append(f"  fetch it: {cmd}")
    return out


def detail_report(t: TaskResult, run_key: str, repo: str | None) -> TaskReport:
    return TaskReport(**dict(t), fetch_command=fetch_command(t, run_key, repo))
