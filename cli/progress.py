"""Following a run: a live table on a terminal, one line per change elsewhere, a summary at the end."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from models.results import PlanResult, RunProgress, TaskResult, TaskStatus

STYLE = {
    TaskStatus.PENDING: "dim",
    TaskStatus.RUNNING: "cyan",
    TaskStatus.MERGED: "green",
    TaskStatus.NO_OP: "yellow",
    TaskStatus.DONE_BEFORE: "green",
    TaskStatus.SKIPPED: "yellow",
    TaskStatus.FAILED: "bold red",
    TaskStatus.CANCELLED: "magenta",
}


def _table(tasks: list[TaskResult], elapsed: dict[str, float], title: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("task", "title", "status", "time", "cost", "commit", "note"):
        table.add_column(
            col,
            no_wrap=col in ("task", "status", "commit"),
            justify="right" if col == "cost" else "left",
        )
    for t in tasks:
        secs = t.duration_s or elapsed.get(t.id, 0.0)
        table.add_row(
            t.id,
            t.title[:48],
            f"[{STYLE[t.status]}]{t.status.value}[/]",
            f"{secs:.1f}s" if secs else "",
            f"${t.cost_usd:.2f}" if t.cost_usd else "",
            (t.commit or "")[:10],
            (t.error or (t.phase if t.status is TaskStatus.RUNNING else ""))[:70],
        )
    return table


class ProgressView:
    """Shows RunProgress snapshots as they come from the `status` query."""

    def __init__(self, console: Console, live: bool) -> None:
        self.console = console
        self.live = Live(console=console, refresh_per_second=4, transient=True) if live else None
        self.seen: dict[str, TaskStatus] = {}
        self.started: dict[str, float] = {}

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
            self.live.update(_table(progress.tasks, elapsed, title))
            return
        for t in progress.tasks:
            # Pending is where every task starts; only movement is news.
            if self.seen.get(t.id, TaskStatus.PENDING) is not t.status:
                self.seen[t.id] = t.status
                extra = f" {t.commit[:10]}" if t.commit else ""
                extra += f" ({t.error})" if t.error else ""
                self.console.print(
                    f"[{time.strftime('%H:%M:%S')}] Task {t.id}: {t.status.value}{extra}"
                )


def print_summary(result: PlanResult, console: Console) -> None:
    console.print(_table(result.tasks, {}, f"{result.workflow_id}: {result.status.value}"))
    counts: dict[str, int] = {}
    for t in result.tasks:
        counts[t.status.value] = counts.get(t.status.value, 0) + 1
    console.print(
        f"target {result.target_branch} at {(result.target_commit or '-')[:12]}; "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f"; total cost ${result.total_cost_usd:.2f}"
    )
    if result.message:
        console.print(result.message)


def result_json(result: PlanResult) -> dict[str, Any]:
    """The `--json` contract of a finished run."""
    return {
        "workflow_id": result.workflow_id,
        "status": result.status.value,
        "target_branch": result.target_branch,
        "target_commit": result.target_commit,
        "tasks": [
            {
                "id": t.id,
                "status": t.status.value,
                "commit": t.commit,
                "attempts": t.attempts,
                "duration_s": t.duration_s,
                "error": t.error,
                "cost_usd": t.cost_usd,
                "tokens_in": t.tokens_in,
                "tokens_out": t.tokens_out,
                "agent_runs": t.agent_runs,
                "review_rounds": t.review_rounds,
                "verdict": t.verdict.model_dump(mode="json") if t.verdict else None,
                "sandbox": t.sandbox,
                "permission_denials": t.permission_denials,
            }
            for t in result.tasks
        ],
        "total_cost_usd": result.total_cost_usd,
    }


def is_terminal() -> bool:
    return sys.stdout.isatty()
