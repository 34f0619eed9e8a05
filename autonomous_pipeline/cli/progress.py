"""Following a run: a live table on a terminal, one line per change elsewhere, a summary at the end."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from autonomous_pipeline.cli.connect import run_key_of
from autonomous_pipeline.cli.task_detail import detail_lines
from autonomous_pipeline.cli.terminal import safe
from autonomous_pipeline.models.results import PlanResult, RunProgress, TaskResult, TaskStatus
from autonomous_pipeline.workflows.outcome import counts_text

STYLE = {
    TaskStatus.PENDING: "dim",
    TaskStatus.RUNNING: "cyan",
    TaskStatus.MERGED: "green",
    TaskStatus.ON_TARGET: "green",
    TaskStatus.NO_OP: "yellow",
    TaskStatus.DONE_BEFORE: "green",
    TaskStatus.SKIPPED: "yellow",
    TaskStatus.FAILED: "bold red",
    TaskStatus.CANCELLED: "magenta",
}


# A note in the live table is cut to fit a terminal; elsewhere (a pipe, a file, a summary) whole.
LIVE_NOTE_CHARS = 70


def _note(t: TaskResult) -> str:
    if t.error:
        return t.error
    if t.status is TaskStatus.RUNNING:
        return t.phase
    if t.status is TaskStatus.ON_TARGET:
        return "already on the target (through other work)"
    failing = [c for c in t.checks if not c.passed and c.pre_existing]
    if failing:
        return f"{len(failing)} check(s) fail on the base too (pre-existing)"
    return ""


def _table(
    tasks: list[TaskResult], elapsed: dict[str, float], title: str, note_chars: int | None
) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("task", "title", "status", "time", "cost", "commit", "note"):
        table.add_column(
            col,
            no_wrap=col in ("task", "status", "commit"),
            justify="right" if col == "cost" else "left",
        )
    for t in tasks:
        secs = t.duration_s or elapsed.get(t.id, 0.0)
        note = _note(t)
        table.add_row(
            t.id,
            escape(safe(t.title[:48])),
            f"[{STYLE[t.status]}]{t.status.value}[/]",
            f"{secs:.1f}s" if secs else "",
            f"${t.cost_usd:.2f}" if t.cost_usd else "",
            (t.commit or "")[:10],
            escape(safe(note[:note_chars] if note_chars else note)),
        )
    return table


class ProgressView:
    """Shows RunProgress snapshots as they come from the `status` query."""

    def __init__(self, console: Console, live: bool) -> None:
        self.console = console
        self.live = Live(console=console, refresh_per_second=4, transient=True) if live else None
        self.seen: dict[str, TaskStatus] = {}
        self.started: dict[str, float] = {}
        self.phases: dict[str, str] = {}
        self.rounds: dict[str, int] = {}
        self.run_flags = (False, False)

    def __enter__(self) -> ProgressView:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def update(self, progress: RunProgress) -> None:
        now = time.monotonic()
        for t in progress.tasks:
            if t.status is TaskStatus.RUNNING:
                self.started.setdefault(t.id, now)
        elapsed = {tid: now - s for tid, s in self.started.items()}
        if self.live:
            title = f"{progress.workflow_id} → {progress.target_branch}" + (
                " (paused)" if progress.paused else ""
            )
            self.live.update(_table(progress.tasks, elapsed, title, LIVE_NOTE_CHARS))
            return
        for line in self.news(progress):
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {safe(line)}", markup=False)

    def news(self, progress: RunProgress) -> list[str]:
        """What changed since the last snapshot, one line each: the run pausing, resuming or
        being cancelled; a task's status, step (phase) and fix rounds."""
        lines = []
        run_flags = (progress.paused, progress.cancelling)
        if run_flags != self.run_flags:
            was_paused, was_cancelling = self.run_flags
            if progress.cancelling and not was_cancelling:
                lines.append("Run: cancelling (running tasks finish or stop; no new task starts)")
            elif progress.paused and not was_paused:
                lines.append("Run: paused (no new task starts until `resume`)")
            elif was_paused and not progress.paused:
                lines.append("Run: resumed")
            self.run_flags = run_flags
        for t in progress.tasks:
            # Pending is where every task starts; only movement is news.
            if self.seen.get(t.id, TaskStatus.PENDING) is not t.status:
                self.seen[t.id] = t.status
                extra = f" {t.commit[:10]}" if t.commit else ""
                extra += f" ({t.error})" if t.error else ""
                lines.append(f"Task {t.id}: {t.status.value}{extra}")
            if t.status is not TaskStatus.RUNNING:
                continue
            if t.review_rounds > self.rounds.get(t.id, 0):
                self.rounds[t.id] = t.review_rounds
                lines.append(f"Task {t.id}: review round {t.review_rounds}")
            if t.phase and self.phases.get(t.id) != t.phase:
                self.phases[t.id] = t.phase
                lines.append(f"Task {t.id}: {t.phase}")
        return lines


def print_summary(result: PlanResult, console: Console, repo: str | None = None) -> None:
    """The final table (notes whole), the totals, and for each task that did not make it what
    a person needs to act on it."""
    console.print(_table(result.tasks, {}, f"{result.workflow_id}: {result.status.value}", None))
    console.print(
        f"target {result.target_branch} at {(result.target_commit or '-')[:12]}; "
        + counts_text(result.tasks)
        + f"; total cost ${result.total_cost_usd:.2f}"
    )
    if result.message:
        console.print(safe(result.message), markup=False)
    for t in result.tasks:
        if t.pull_request and t.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            console.print(safe(f"task {t.id}: {t.status.value}, {t.pull_request}"), markup=False)
    key = run_key_of(result.workflow_id)
    for t in result.tasks:
        if t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            console.print("")
            for line in detail_lines(t, key, repo, brief=True):
                console.print(line, markup=False)


def is_terminal(stderr: bool = False) -> bool:
    return (sys.stderr if stderr else sys.stdout).isatty()


# Off a terminal nothing is wrapped: a pipe or a log file gets whole lines, greppable.
UNWRAPPED_WIDTH = 10_000


def console(stderr: bool = False) -> Console:
    """The starter's console: no markup in what runs say (brackets are text), no wrapping when
    the output is not a terminal."""
    tty = is_terminal(stderr)
    return Console(
        stderr=stderr,
        highlight=False,
        markup=True,
        soft_wrap=not tty,
        width=None if tty else UNWRAPPED_WIDTH,
    )
