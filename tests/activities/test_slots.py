"""Giving a slot back early is best effort: a run that cannot hear it fails nothing."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from autonomous_pipeline.activities.slots import check_retry, give_back
from autonomous_pipeline.cli.redaction import data_converter
from autonomous_pipeline.models.activity_io import SLOT_GONE, SlotGrant
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


def test_a_retried_step_that_may_have_given_its_slot_back_stops_before_its_agent() -> None:
    env = ActivityEnvironment()
    env.run(check_retry, GRANT)  # a first attempt goes on
    env.run(check_retry, None)  # so does any attempt of a step that holds its slot to the end
    env.info = dataclasses.replace(env.info, attempt=3)
    env.run(check_retry, None)
    with pytest.raises(ApplicationError) as raised:
        env.run(check_retry, GRANT)
    assert raised.value.type == SLOT_GONE and raised.value.non_retryable
    assert raised.value.details == (2,)  # the attempts before it, which ran the agent
