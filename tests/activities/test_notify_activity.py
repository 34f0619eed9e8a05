"""The notify activity against a real receiver: each receiver told once per event, across the
retries a receiver that is down causes; a receiver that can never be one does not silence the
others."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from autonomous_pipeline.activities.notify import NOT_DELIVERABLE, NotifyActivities
from autonomous_pipeline.models.notify import Notice, NoticeKind, NotifyIn
from tests.fixtures.webhooks.receiver import Receiver

NOTICE = Notice(
    id="pipeline-x#r1#failed", kind=NoticeKind.TASK_FAILED, run="pipeline-x", task="1.2",
    title="Task 1.2 failed: b", text="agent exited 3", link="http://ui/pipeline-x/task-1.2",
)  # fmt: skip


class Attempts:
    """Runs the activity as the worker's retries would: each attempt with the heartbeat details
    the one before it recorded."""

    def __init__(self) -> None:
        self.details: list[Any] = []

    async def run(self, inp: NotifyIn) -> Any:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, heartbeat_details=self.details)
        beats: list[Any] = []
        env.on_heartbeat = lambda *d: beats.append(list(d))
        try:
            return await env.run(NotifyActivities().notify, inp)
        finally:
            if beats:
                self.details = beats[-1]


async def test_a_receiver_that_was_down_is_told_on_the_retry_and_the_others_not_again(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_HOOK", receiver.url + "/env")
    receiver.failing["/flaky"] = 1
    urls = [receiver.url + "/ok", receiver.url + "/flaky", "env:TEAM_HOOK"]
    attempts = Attempts()
    with pytest.raises(ApplicationError, match="receiver 2: HTTP 503") as info:
        await attempts.run(NotifyIn(urls=urls, notice=NOTICE))
    assert not info.value.non_retryable
    assert sorted(receiver.paths()) == ["/env", "/ok"]
    out = await attempts.run(NotifyIn(urls=urls, notice=NOTICE))
    assert out.sent == 1 and sorted(receiver.paths()) == ["/env", "/flaky", "/ok"]
    for _, headers, body in receiver.posts:
        assert headers["Idempotency-Key"] == NOTICE.id and body["id"] == NOTICE.id
    # No URL in what the heartbeat keeps.
    assert all(receiver.url not in str(k) for k in attempts.details[0])


async def test_a_receiver_that_is_no_url_is_refused_and_the_rest_are_told(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAD_HOOK", "https://hooks.example:abc/x")
    urls = ["env:BAD_HOOK", receiver.url + "/ok"]
    with pytest.raises(ApplicationError) as info:
        await Attempts().run(NotifyIn(urls=urls, notice=NOTICE))
    assert info.value.type == NOT_DELIVERABLE and info.value.non_retryable
    assert "receiver 1: not a URL" in info.value.message and "hooks.example" not in str(info.value)
    assert receiver.paths() == ["/ok"]


async def test_a_worker_without_the_variable_leaves_the_notice_to_a_retry(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEAM_HOOK", raising=False)
    attempts = Attempts()
    with pytest.raises(ApplicationError, match="no TEAM_HOOK") as info:
        await attempts.run(NotifyIn(urls=["env:TEAM_HOOK"], notice=NOTICE))
    assert not info.value.non_retryable  # another worker may have it
    monkeypatch.setenv("TEAM_HOOK", receiver.url + "/env")
    assert (await attempts.run(NotifyIn(urls=["env:TEAM_HOOK"], notice=NOTICE))).sent == 1
