"""`--json` outputs are public models: a run's report has one schema, running or finished."""

from __future__ import annotations

import json

from autonomous_pipeline.models.reports import RunReport
from autonomous_pipeline.models.results import (
    MemoTask,
    PlanResult,
    ProgressMemo,
    RunProgress,
    RunStatus,
    TaskCount,
    TaskResult,
    TaskStatus,
)

TASKS = [
    TaskResult(id="1.1", status=TaskStatus.MERGED, commit="abc", cost_usd=0.5),
    TaskResult(id="1.2", status=TaskStatus.FAILED, error="boom"),
    TaskResult(id="1.3", status=TaskStatus.FAILED, error="again"),
]


def _keys(report: RunReport) -> tuple[set[str], set[str]]:
    data = json.loads(report.model_dump_json())
    return set(data), {k for t in data["tasks"] for k in t}


def test_running_waiting_and_finished_runs_share_one_schema() -> None:
    finished = RunReport.finished_run(
        PlanResult(workflow_id="w", status=RunStatus.FAILED, target_branch="t", tasks=TASKS)
    )
    running = RunReport.running(
        RunProgress(workflow_id="w", status=RunStatus.RUNNING, target_branch="t", tasks=TASKS),
        "http://ui/w",
    )
    memo = ProgressMemo(
        status=RunStatus.RUNNING,
        total=3,
        counts=[TaskCount(status=TaskStatus.FAILED, count=2)],
        tasks=[MemoTask(id="1.2", status=TaskStatus.FAILED, error="boom")],
    )
    waiting = RunReport.from_memo("w", memo, "start a worker")
    assert _keys(finished) == _keys(running) == _keys(waiting)
    assert json.loads(finished.model_dump_json())["counts"] == {"merged": 1, "failed": 2}
    assert (finished.finished, running.finished, waiting.finished) == (True, False, False)
    assert (running.worker, waiting.worker, waiting.tasks_complete) == (True, False, False)
    assert waiting.total_tasks == 3 and waiting.counts == {TaskStatus.FAILED: 2}
