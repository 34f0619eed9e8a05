"""The run's details in the Web UI: its outcome, then one line per task. Pure.

A list rather than a markdown table: the Web UI renders tables without cell padding, so the
columns ran together ("mergedmerge").
"""

from __future__ import annotations

from autonomous_pipeline.models.results import RunStatus, TaskResult, TaskStatus
from autonomous_pipeline.models.run import PlanRunInput

SHOWN = 300

MARK = {
    TaskStatus.PENDING: "·",
    TaskStatus.RUNNING: "▶",
    TaskStatus.MERGED: "✔",
    TaskStatus.ON_TARGET: "✔",
    TaskStatus.NO_OP: "○",
    TaskStatus.DONE_BEFORE: "✔",
    TaskStatus.SKIPPED: "↷",
    TaskStatus.FAILED: "✘",
    TaskStatus.CANCELLED: "■",
}


def _line(r: TaskResult) -> str:
    note = (r.error or r.phase or "").replace("\n", " ")[:160]
    commit = f" `{r.commit[:10]}`" if r.commit else ""
    title = r.title.replace("*", "")[:60]
    return f"- {MARK[r.status]} **{r.id}** {title} — **{r.status.value}**{commit}" + (
        f" — {note}" if note else ""
    )


def details_markdown(
    inp: PlanRunInput,
    results: list[TaskResult],
    paused: bool,
    status: RunStatus = RunStatus.RUNNING,
) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    state = "**paused**" if paused and status is RunStatus.RUNNING else f"**{status.value}**"
    lines = [
        f"**{inp.plan.title or inp.plan_name}** → `{inp.options.target_branch}` — {state}",
        "",
        f"{len(results)} tasks: {summary}",
        "",
    ]
    lines += [_line(r) for r in results[:SHOWN]]
    if len(results) > SHOWN:
        lines.append(f"- … {len(results) - SHOWN} more")
    return "\n".join(lines)
