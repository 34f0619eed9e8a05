"""What a run's workflows show to search (`models.search`): the attributes and their changes. Pure;
workflow code upserts what `changes` returns.

Written only by runs whose server has the attributes registered (RunOptions.searchable): a
workflow that upserts an unknown attribute fails its workflow task, which would stop the run."""

from __future__ import annotations

from typing import Any

from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from autonomous_pipeline.models import search
from autonomous_pipeline.models.results import TaskResult, TaskStatus

RUN = SearchAttributeKey.for_keyword(search.RUN)
TASK = SearchAttributeKey.for_keyword(search.TASK)
STATUS = SearchAttributeKey.for_keyword(search.STATUS)
COST = SearchAttributeKey.for_float(search.COST)
TARGET = SearchAttributeKey.for_keyword(search.TARGET)

Shown = dict[str, Any]  # attribute name -> the value last written


def run_attributes(run: str, target: str, status: str, cost: float) -> Shown:
    return {RUN.name: run, TARGET.name: target, STATUS.name: status, COST.name: round(cost, 6)}


def task_state(res: TaskResult) -> str:
    """A task's PipelineStatus: its status, or `awaiting_approval` while a person is asked."""
    if res.status is TaskStatus.RUNNING and res.approval_commit is not None:
        return search.AWAITING_APPROVAL
    return res.status.value


def task_attributes(run: str, target: str, res: TaskResult) -> Shown:
    return {
        RUN.name: run,
        TASK.name: res.id,
        TARGET.name: target,
        STATUS.name: task_state(res),
        COST.name: round(res.cost_usd, 6),
    }


_KEYS: dict[str, SearchAttributeKey[Any]] = {k.name: k for k in (RUN, TASK, STATUS, COST, TARGET)}


def typed(shown: Shown) -> TypedSearchAttributes:
    """As a workflow's start takes them."""
    return TypedSearchAttributes([SearchAttributePair(_KEYS[n], v) for n, v in shown.items()])


def changes(new: Shown, old: Shown) -> list[SearchAttributeUpdate[Any]]:
    """The upserts that make `old` read `new`: only what differs."""
    return [_KEYS[n].value_set(v) for n, v in new.items() if old.get(n) != v]
