"""Recorded histories of every workflow shape replay against the current workflow code.

A failure here means a change would break runs already in flight: put it behind
`workflow.patched` (README: "Changing a workflow").
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from autonomous_pipeline.cli.redaction import data_converter
from autonomous_pipeline.workflows.plan import PlanWorkflow
from autonomous_pipeline.workflows.task import TaskWorkflow

ROOT = Path(__file__).resolve().parent / "histories"
HISTORIES = sorted(ROOT.rglob("*.json"))
VERSIONS = sorted(p.name for p in ROOT.iterdir() if p.is_dir())


@pytest.mark.parametrize("version", VERSIONS)
def test_every_shape_is_recorded(version: str) -> None:
    recorded = [p for p in HISTORIES if p.parent.name == version]
    names = {p.name.split("__")[0] for p in recorded}
    for shape in (
        "all-merged",
        "failure-skips-dependants",
        "no-op-verify-fail-conflict",
        "setup-failed",
        "retry",
        "cancel-now",
        "pause-skip-resume",
        "review-fix-round",
        "verify-fix-round",
        "conflict-fix-round",
        "usage-limit-wait",
        "budget-spent",
        "approval",
        # Since v5: steering and decisions by update, idle fix rounds, changes already merged.
        *(
            ("steer-updates", "decide-updates", "fix-no-change", "on-target")
            if version >= "v5"
            else ()
        ),
    ):
        assert f"replay-{shape}.json" in {p.name for p in recorded} or f"replay-{shape}" in names
    assert any("__task-" in p.name for p in recorded), "TaskWorkflow histories are recorded too"


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    workflow_id = path.stem.replace("__", "/")
    history = WorkflowHistory.from_json(workflow_id, path.read_text())
    replayer = Replayer(workflows=[PlanWorkflow, TaskWorkflow], data_converter=data_converter())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
