"""One list of activities: the worker registers each exactly once, the workflow tests' fakes
register the same ones, and each takes and returns what its reference says."""

from __future__ import annotations

import typing
from pathlib import Path

from temporalio import activity

from autonomous_pipeline.backends.sandboxes.registry import Sandboxes
from autonomous_pipeline.backends.workspace.tasks import Workspaces
from autonomous_pipeline.models.activity_refs import ALL
from autonomous_pipeline.worker import activities
from tests.workflows.fakes import FakeActivities, Script


def _definitions(fns: list) -> dict[str, object]:
    found = {}
    for fn in fns:
        d = activity._Definition.must_from_callable(fn)
        assert d.name not in found, f"{d.name} registered twice"
        found[d.name] = fn
    return found


def test_the_worker_and_the_fakes_register_exactly_the_named_activities(tmp_path: Path) -> None:
    shared, local = activities(Sandboxes(Workspaces(tmp_path)), "q-local")
    registered = _definitions(shared + local)
    names = {ref.name for ref in ALL}
    assert set(registered) == names
    assert set(_definitions(FakeActivities(Script()).all())) == names
    for ref in ALL:
        hints = typing.get_type_hints(registered[ref.name])
        assert (hints["inp"], hints["return"]) == (ref.arg, ref.result), ref.name


def test_nothing_a_step_reports_is_of_a_type_that_is_never_masked() -> None:
    # Masking is by type: a result, query answer, update reply or memo of a type the pipeline
    # acts on would reach the history unmasked. Reports and inputs must never share a type.
    from autonomous_pipeline.cli.redaction import ACTED_ON
    from autonomous_pipeline.models.results import PlanResult, ProgressMemo, RunProgress, TaskResult
    from autonomous_pipeline.models.steer import SteerReply

    reports = {ref.result for ref in ALL}
    reports |= {PlanResult, TaskResult, RunProgress, SteerReply, ProgressMemo}
    assert not reports & ACTED_ON
