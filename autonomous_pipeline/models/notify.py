"""Notifications: who is told (`--notify`), and what one says."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class NoticeKind(StrEnum):
    APPROVAL = "approval_waiting"  # a task waits for a person's approval
    TASK_FAILED = "task_failed"
    BUDGET = "budget_reached"  # the run's budget is spent: no new task starts
    RUN_FINISHED = "run_finished"


class NotifyConfig(BaseModel):
    # Webhook URLs (https://..., or env:NAME: the URL is the worker's environment variable NAME,
    # so a webhook's secret stays out of the run's history).
    urls: list[str]
    # The Web UI's page of a workflow is this and its id (None: no Web UI known).
    links: str | None = None


class Notice(BaseModel):
    """One event, told once. `id` is the event's: a receiver that sees it twice (a send whose
    answer was lost, then retried) can drop the second."""

    id: str
    kind: NoticeKind
    run: str  # the run's workflow id
    task: str | None = None
    title: str  # one line
    text: str  # what happened, and what to do
    link: str | None = None  # the run's or the task's page in the Web UI
    status: str | None = None
    cost_usd: float | None = None
    counts: dict[str, int] = Field(default_factory=dict)  # run finished: tasks by status


class NotifyIn(BaseModel):
    urls: list[str]
    notice: Notice


class NotifyOut(BaseModel):
    sent: int  # receivers that took it (this attempt and the ones before)
