"""Timeouts and retry policies of every activity, named in one place."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Errors that no retry can fix: the activity raised them on purpose.
NON_RETRYABLE = [
    "PlanError",
    "UsageError",
    "HistoryRewrittenError",
    "UnknownBackendError",
    "AgentAuthError",
    "BackendLoadError",
    "ConflictStateLost",
    "SandboxError",
    "WeakenedIsolationRefused",
]

# Git and bookkeeping: quick, idempotent, retried patiently (a server restart, a lock held).
GIT_TIMEOUT = timedelta(minutes=10)
GIT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
    non_retryable_error_types=NON_RETRYABLE,
)

# The agent: an attempt lost to a dead worker is noticed by the heartbeat timeout and run again;
# an agent that ran and failed is a result, not an exception, and is not retried here. Attempts
# are spent by crashes of workers and outages of the server, not by the agent: allow many.
AGENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=NON_RETRYABLE,
)
# Slack on top of the agent's own timeout: the activity kills the agent itself first.
AGENT_TIMEOUT_SLACK = timedelta(minutes=2)


def verify_timeout(per_command_s: float, commands: int) -> timedelta:
    # Each failing command may run twice (on the task and on its base).
    return timedelta(seconds=per_command_s * max(1, commands) * 2 + 60)


# History bytes past which a run continues as new once no task runs (twice this: it stops starting
# tasks until none runs). Temporal refuses a history past 50 MB; each revision records its plan.
HISTORY_BYTES = 8 * 1024 * 1024
# What a run carries into the run that continues it, at most: Temporal refuses an input past 2 MiB.
MAX_CARRY_BYTES = 1_900_000
