"""The run's details in the Web UI: a markdown table of tasks. Pure."""

from __future__ import annotations

from models.results import TaskResult
from models.run import PlanRunInput


def details_markdown(inp: PlanRunInput, results: list[TaskResult], paused: bool) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines = [
        f"**{inp.plan.title or inp.plan_name}** → `{inp.options.target_branch}`"
        + (" — **paused**" if paused else ""),
        "",
        f"{len(results)} tasks: {summary}",
        "",
        "| task | title | status | note |",
        "|---|---|---|---|",
    ]
    for r in results[:300]:
        note = (r.error or r.phase or "").replace("|", "/").replace("\n", " ")[:120]
        lines.append(f"| {r.id} | {r.title.replace('|', '/')[:60]} | {r.status.value} | {note} |")
    if len(results) > 300:
        lines.append(f"| … | {len(results) - 300} more | | |")
    return "\n".join(lines)
