"""How an activity gets its task's sandbox, and what a sandbox's failure becomes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from temporalio.exceptions import ApplicationError

from autonomous_pipeline.backends.base import SandboxBackend, SandboxError
from autonomous_pipeline.backends.sandboxes.policy import WEAKENED_REFUSED
from autonomous_pipeline.backends.sandboxes.registry import Sandboxes
from autonomous_pipeline.models.sandbox import SandboxConfig

SANDBOX_ERROR = "SandboxError"


def sandbox_for(sandboxes: Sandboxes, config: SandboxConfig, run_key: str) -> SandboxBackend:
    """The sandbox of an activity's task, if this worker agrees to run it as configured."""
    refusal = sandboxes.policy.refusal(config, run_key)
    if refusal is not None:
        raise ApplicationError(refusal, type=WEAKENED_REFUSED, non_retryable=True)
    return sandboxes.get(config)


@contextlib.asynccontextmanager
async def sandbox_failures() -> AsyncIterator[None]:
    """A sandbox that could not run a step fails it for good, with the sandbox's own words:
    retried, an image that is not there is still not there."""
    try:
        yield
    except SandboxError as exc:
        raise ApplicationError(f"sandbox: {exc}", type=SANDBOX_ERROR, non_retryable=True) from None
