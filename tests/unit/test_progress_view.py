"""What the starter prints while it follows a run off a terminal, and at its end."""

from __future__ import annotations

import io

from rich.console import Console

from autonomous_pipeline.cli.progress import ProgressView, print_summary
from autonomous_pipeline.models.results import (
    CheckResult,
    PlanResult,
    RunProgress,
    RunStatus,
    TaskResult,
    TaskStatus,
)


def snapshot(paused: bool = False, cancelling: bool = False, **task: object) -> RunProgress:
    t = TaskResult(**({"id": "1.1", "status": TaskStatus.RUNNING} | task))  # type: ignore[arg-type]
    return RunProgress(
        workflow_id="pipeline-x",
        status=RunStatus.RUNNING,
        paused=paused,
        cancelling=cancelling,
        target_branch="pipeline/x",
        tasks=[t],
    )


def test_line_mode_tells_steps_fix_rounds_pause_and_cancel() -> None:
    view = ProgressView(Console(file=io.StringIO()), live=False)
    seen = []
    for p in (
        snapshot(phase="agent"),
        snapshot(phase="agent"),
        snapshot(phase="verify"),
        snapshot(paused=True, phase="fix round 1", review_rounds=1),
        snapshot(paused=False, phase="fix round 1", review_rounds=1),
        snapshot(cancelling=True, phase="merge", review_rounds=1),
    ):
        seen.append(view.news(p))
    assert seen == [
        ["Task 1.1: running", "Task 1.1: agent"],
        [],  # nothing moved: nothing printed
        ["Task 1.1: verify"],
        [
            "Run: paused (no new task starts until `resume`)",
            "Task 1.1: review round 1",
            "Task 1.1: fix round 1",
        ],
        ["Run: resumed"],
        ["Run: cancelling (running tasks finish or stop; no new task starts)", "Task 1.1: merge"],
    ]


def test_the_summary_keeps_notes_whole_and_explains_failed_tasks() -> None:
    long_error = "not resolved after 2 fix round(s): " + "x" * 150 + " [the end]"
    failed = TaskResult(
        id="2.1",
        title="Add [login]",
        status=TaskStatus.FAILED,
        error=long_error,
        checks=[
            CheckResult(
                command="pytest -q",
                exit_code=1,
                passed=False,
                output_tail="\n".join(f"line {i}" for i in range(40)),
            ),
            CheckResult(command="ruff check", exit_code=1, passed=False, pre_existing=True),
        ],
        transcript="/ws/transcripts/r/2.1.log",
        branch="pipeline/r/task-2.1",
        clone="/ws/repos/app.git",
    )
    result = PlanResult(
        workflow_id="pipeline-r", status=RunStatus.FAILED, target_branch="t", tasks=[failed]
    )
    buf = io.StringIO()
    print_summary(result, Console(file=buf, width=10_000), repo="/src/app")
    out = buf.getvalue()
    assert long_error in out  # in the table, uncut, brackets and all
    assert "| line 39" in out and "| line 25" in out and "| line 24" not in out  # the last 15
    assert "check FAIL (exit 1); fails on the base too (pre-existing): ruff check" in out
    assert "transcript: /ws/transcripts/r/2.1.log" in out
    assert (
        "fetch it: git -C /src/app fetch /ws/repos/app.git pipeline/r/task-2.1:pipeline/failed/r/2.1"
        in out
    )
