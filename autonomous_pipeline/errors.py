"""Domain exceptions, and the error-type names that retry policies refer to.

Raise sites and retry policies share these names so that a non-retryable error is never retried
because of a typo in a string.
"""

from __future__ import annotations

from autonomous_pipeline.models.plan import PlanIssue


class PipelineError(Exception):
    """Base of every error this project raises on purpose."""


class PlanError(PipelineError):
    """A plan that cannot be run. Carries every problem found, each with its line."""

    def __init__(self, errors: list[PlanIssue], warnings: list[PlanIssue] | None = None) -> None:
        self.errors = sorted(errors, key=lambda i: i.line)
        self.warnings = list(warnings or [])
        super().__init__("; ".join(f"line {e.line}: {e.message}" for e in self.errors))

    def format(self, filename: str) -> list[str]:
        """`FILENAME:LINE: message`, one line per problem, as compilers print them."""
        return [f"{filename}:{e.line}: {e.message}" for e in self.errors]


class UsageError(PipelineError):
    """A bad invocation: wrong flags, a missing file, a repo that is not a repo."""
