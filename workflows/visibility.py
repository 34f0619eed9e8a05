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
    return TypedSearchAttributes(
        [SearchAttributePair(_KEYS[n], _bounded(v)) for n, v in shown.items()]
    )


# The server refuses a keyword value over 2,048 bytes, and a workflow whose upsert is refused
# fails its every step: a longer one (a target branch of absurd length) is cut.
MAX_KEYWORD_BYTES = 2000


def _bounded(value: Any) -> Any:
    if isinstance(value, str) and len(value.encode()) > MAX_KEYWORD_BYTES:
        return value.encode()[:MAX_KEYWORD_BYTES].decode(errors="ignore")
    return value


def changes(new: Shown, old: Shown) -> list[SearchAttributeUpdate[Any]]:
    """The upserts that make `old` read `new`: only what differs."""
    return [_KEYS[n].value_set(_bounded(v)) for n, v in new.items() if old.get(n) != v]
