"""Giving a slot back early is best effort: a run that cannot hear it fails nothing."""

from __future__ import annotations

import logging

import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from autonomous_pipeline.activities.slots import give_back
from autonomous_pipeline.cli.redaction import data_converter
from autonomous_pipeline.models.activity_io import SlotGrant
from tests import temporal_env

GRANT = SlotGrant(
    workflow_id="no-such-run",
    run_id="5a4c2b5e-0000-4000-8000-000000000000",
    task_workflow_id="no-such-run/task-1.1",
    task_id="1.1",
    grant=1,
)


async def test_a_run_that_is_gone_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_env.test_server_path(),
        data_converter=data_converter(),
    ) as env:
        with caplog.at_level(logging.WARNING):
            await ActivityEnvironment(client=env.client).run(give_back, GRANT)
    assert "could not give the run its slot back early" in caplog.text


async def test_without_a_client_nothing_is_sent() -> None:
    await ActivityEnvironment().run(give_back, GRANT)  # no client to send with: returns


class _Refusing:
    """A client whose every signal fails with something other than an RPC error."""

    def get_workflow_handle(self, *args: object, **kwargs: object) -> _Refusing:
        return self

    async def signal(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("the connection was dropped")


async def test_any_failure_to_give_back_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Best effort: the step's own end frees the slot anyway, and its result must not be lost.
    with caplog.at_level(logging.WARNING):
        await ActivityEnvironment(client=_Refusing()).run(give_back, GRANT)  # type: ignore[arg-type]
    assert "the connection was dropped" in caplog.text
