"""A run's final result as the client reads it: returned, or carried by the failure of a run
that did not complete (its workflow ends failed so that it shows so at a glance)."""

from __future__ import annotations

from temporalio.client import WorkflowFailureError, WorkflowHandle

from autonomous_pipeline.models.results import PlanResult
from autonomous_pipeline.workflows.outcome import RUN_FAILED, result_of


async def final_result(handle: WorkflowHandle) -> PlanResult:
    try:
        result = await handle.result()
        return result if isinstance(result, PlanResult) else PlanResult.model_validate(result)
    except WorkflowFailureError as exc:
        found = result_of(exc.cause, RUN_FAILED, PlanResult)
        if found is None:
            raise
        return found
