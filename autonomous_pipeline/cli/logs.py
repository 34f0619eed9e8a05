"""Logging of the worker and the starter: structlog's processors over the standard library's
logging, so the pipeline's lines, the SDK's (its core's too, forwarded by `telemetry`) and every
library's go through one chain: context, level, time, secrets masked, then JSON lines or a
readable console line.

Context: a line logged inside an activity carries `run`, `task`, `activity`, `attempt` and `phase`
(bound for the activity's life by `LogContext`); one logged by workflow code through
`workflow.logger` carries `run`, `task` and `attempt` from the SDK's `temporal_workflow` extra."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger
from temporalio import activity, workflow
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from autonomous_pipeline.backends.secrets import redactor
from autonomous_pipeline.models.ops import LogFormat

# A run's workflow id is `pipeline-KEY`; its tasks' `pipeline-KEY/task-ID[/try-N]`.
TASK_MARK = "/task-"
TRY_MARK = "/try-"

# The step an activity is: the `phase` of the lines it logs.
PHASES = {
    "prepare_run": "setup",
    "claim_worker": "claim",
    "claim_workspace": "claim",
    "prepare_workspace": "workspace",
    "run_agent": "agent",
    "verify_task": "verify",
    "review_task": "review",
    "prepare_conflict_fix": "conflict fix",
    "merge_task": "merge",
    "finish_task": "checks and merge",
    "cleanup_workspace": "cleanup",
    "notify": "notify",
}


def ids_of(workflow_id: str) -> tuple[str, str | None]:
    """(the run's workflow id, the task's id or None) of one of a run's workflows."""
    run, _, rest = workflow_id.partition(TASK_MARK)
    return run, (rest.partition(TRY_MARK)[0] or None) if rest else None


def try_of(workflow_id: str) -> int:
    """Which try of its task a task's workflow is (`retry` starts another)."""
    _, _, n = workflow_id.partition(TRY_MARK)
    return int(n) if n.isdigit() else 1


def context_of(workflow_id: str, activity_type: str | None, attempt: int) -> dict[str, Any]:
    run, task = ids_of(workflow_id)
    found: dict[str, Any] = {"run": run, "attempt": attempt}
    if task:
        found["task"] = task
        found["try"] = try_of(workflow_id)
    if activity_type:
        found["activity"] = activity_type
        found["phase"] = PHASES.get(activity_type, "pull request")
    return found


@contextmanager
def bound(workflow_id: str, activity_type: str | None, attempt: int) -> Iterator[None]:
    """The context of every line logged meanwhile (in this task, and threads it starts)."""
    with structlog.contextvars.bound_contextvars(**context_of(workflow_id, activity_type, attempt)):
        yield


class LogContext(Interceptor):
    """A worker interceptor: each activity's lines carry its run, task, step and attempt, the
    lines of the backends it calls (which log through plain `logging`) included."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityContext(next)


class _ActivityContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        with bound(info.workflow_id or "", info.activity_type, info.attempt):
            return await self.next.execute_activity(input)


def _temporal_context(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The SDK's extras (`temporal_workflow`, `temporal_activity`) as our context keys."""
    record = event.get("_record")
    for key in ("temporal_activity", "temporal_workflow"):
        info = getattr(record, key, None) if record is not None else None
        if isinstance(info, dict) and info.get("workflow_id"):
            activity_type = info.get("activity_type") if key == "temporal_activity" else None
            for k, v in context_of(
                str(info["workflow_id"]), activity_type, int(info.get("attempt") or 1)
            ).items():
                event.setdefault(k, v)
            break
    return event


def mask_secrets(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Every string in the line with the process's secret values masked: the message, its
    arguments, the traceback, the context."""
    mask = redactor()
    if not mask:
        return event
    return mask.deep(event)


def _drop_sdk_extras(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    event.pop("temporal_workflow", None)
    event.pop("temporal_activity", None)
    return event


def formatter(json_lines: bool) -> structlog.stdlib.ProcessorFormatter:
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        _temporal_context,
        structlog.stdlib.ExtraAdder(),
        _drop_sdk_extras,
    ]
    render: list[Processor] = (
        [
            structlog.processors.format_exc_info,
            mask_secrets,
            structlog.processors.JSONRenderer(default=str),
        ]
        if json_lines
        else [
            structlog.processors.format_exc_info,
            mask_secrets,
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    )


def configure_logging(level: int | str = logging.WARNING, fmt: LogFormat = LogFormat.AUTO) -> None:
    """One stderr handler for the process, which masks secrets in whatever is logged. Called
    again (once the flags are read), it replaces the first."""
    json_lines = fmt is LogFormat.JSON or (fmt is LogFormat.AUTO and not sys.stderr.isatty())
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(json_lines))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # httpx says every request's URL at INFO: a webhook's URL is its secret.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The SDK's context goes into the line's keys (_temporal_context), not its message too.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
