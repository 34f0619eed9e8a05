"""Recorded histories of every workflow shape replay against the current workflow code.

A failure here means a change would break runs already in flight: put it behind
`workflow.patched` (README: "Changing a workflow").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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
    names = {p.name.split("__")[0].split("@")[0].removesuffix(".json") for p in recorded}
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
            if int(version[1:]) >= 5
            else ()
        ),
        # Since v13: notices, and a searchable run (on a dev server).
        *(("notified", "searchable") if int(version[1:]) >= 13 else ()),
        # Since v14: a living plan (revisions), and a run continued as new.
        *(("revised", "continued") if int(version[1:]) >= 14 else ()),
    ):
        assert f"replay-{shape}" in names
    assert any("__task-" in p.name for p in recorded), "TaskWorkflow histories are recorded too"
    if int(version[1:]) >= 14:
        assert any("@" in p.name for p in recorded), "a run continued as new is recorded"


@pytest.mark.parametrize("version", VERSIONS)
async def test_every_history_of_a_version_replays(version: str) -> None:
    """One replayer for a version's histories (a replayer per history cost twice the time);
    every one that fails is named."""
    paths = [p for p in HISTORIES if p.parent.name == version]
    # NAME__task-X: a task's workflow NAME/task-X; NAME@N: the N-th run continuing NAME.
    loaded = [
        WorkflowHistory.from_json(p.stem.split("@")[0].replace("__", "/"), p.read_text())
        for p in paths
    ]
    names = {h.run_id: p.name for h, p in zip(loaded, paths, strict=True)}

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for history in loaded:
            yield history

    replayer = Replayer(workflows=[PlanWorkflow, TaskWorkflow], data_converter=data_converter())
    result = await replayer.replay_workflows(histories(), raise_on_replay_failure=False)
    assert len(paths) > 0 and not result.replay_failures, {
        names.get(run, run): str(err)[:300] for run, err in result.replay_failures.items()
    }
