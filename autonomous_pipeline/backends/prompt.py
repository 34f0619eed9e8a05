"""The text a coding agent is given for one task.

A pure function of its arguments (no clock, no environment, no files), so the workflow may build
the prompt itself and the same task always yields the same text.
"""

from __future__ import annotations

import re

from autonomous_pipeline.models.plan import Task

GROUND_RULES = (
    "Work only inside the current directory; it is a git worktree made for this task. "
    "Everything outside it may be read-only: put temporary files in $TMPDIR.",
    "Do not commit, push, rebase or switch branches: the pipeline commits your changes and "
    "merges them after review.",
    "Do not touch files outside the task's scope; other tasks run in parallel on other files.",
    "Make the verification commands pass before you finish; do not weaken or skip them.",
    "When you are done, end with one short line that says what you changed.",
)


def build_prompt(task: Task, plan_title: str | None, base_commit: str) -> str:
    parts: list[str] = []
    if plan_title:
        parts.append(f"# Plan: {plan_title.strip()}")
    parts.append(f"## Task {task.id}: {task.title.strip()}")
    parts.append(f"The worktree is checked out at commit {base_commit}.")
    if task.instructions.strip():
        parts.append("### Instructions\n\n" + task.instructions.strip("\n"))
    if task.files:
        files = "\n".join(f"- {f.action.strip().capitalize()}: `{f.path}`" for f in task.files)
        parts.append("### Files this task names\n\n" + files)
    if task.commands:
        cmds = "\n".join(_command_item(c) for c in task.commands)
        parts.append(
            "### Verification\n\nThese commands must pass, run from the worktree's root:\n\n" + cmds
        )
    if task.criteria:
        crit = "\n".join(f"- {c.strip()}" for c in task.criteria)
        parts.append("### Review criteria\n\nA reviewer will check that:\n\n" + crit)
    rules = "\n".join(f"- {r}" for r in GROUND_RULES)
    parts.append("### Ground rules\n\n" + rules)
    return "\n\n".join(parts) + "\n"


def _command_item(command: str) -> str:
    """A one-line command as inline code; anything else in a fence longer than any run inside."""
    command = command.strip()
    if "\n" not in command and "`" not in command:
        return f"- `{command}`"
    longest = max((len(m) for m in re.findall(r"`+", command)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}sh\n{command}\n{fence}"
